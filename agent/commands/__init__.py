"""The command line's subcommands, one module per command (`forewarn run`, `check`, `test`,
`backtest`, `detect`, `tickets`, `silence`, `trends`). Each has `command(args) -> int` and is
imported only when its command runs. Commands sit on top of everything and may import any
package; nothing imports a command.
"""
