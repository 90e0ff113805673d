"""The series store: label sets (`labels`), the series and their raw and downsampled tiers
with the label index (`series`), and the snapshot file (`snapshot`). It knows nothing of
rules, models, PromQL, tickets or web; it imports only the foundations (persistence).

Other packages import the store's public names from here.
"""

from agent.store.labels import Labels, labels_dict, make_labels, metric_name, with_pairs
from agent.store.series import STALE_NAN, RetentionNeed, Store, StoreStats, bytes_per_series, is_stale
from agent.store.snapshot import RestoreInterrupted, Snapshot

__all__ = ["STALE_NAN", "Labels", "RestoreInterrupted", "RetentionNeed", "Snapshot", "Store", "StoreStats",
           "bytes_per_series", "is_stale", "labels_dict", "make_labels", "metric_name", "with_pairs"]
