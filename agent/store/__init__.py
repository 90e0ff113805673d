"""The series store: label sets, series ids and the label index, the raw and downsampled
tiers, and snapshots. It knows nothing of rules, models, PromQL, tickets or web; it imports
only the foundations (persistence).
"""
