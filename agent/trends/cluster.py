"""Recurrence: incidents grouped into clusters of the same underlying failure.

Owns: the similarity measure between titles, the clustering, and cluster identity (id and
signature). Two incidents can share a cluster only when they have the same service (or CI;
"" groups the incidents that have none): a disk filling up on the billing database and one on
the search cluster are two problems to fix, however alike their titles.

Similarity (chosen on the evaluation set, see docs/trends.md and benchmarks/trends.py): the
cosine of TF-IDF vectors of the normalised, stemmed title words (placeholders such as
`<host>` count half a word). IDF (over the distinct titles of the whole history) makes the
words every title shares ("error", "<host>") count little and the rare, telling ones
("replication", "oom") count much; within a service the service's own name is dropped. On
the evaluation set's tuning seed it scored best (pairwise F1 0.975 at threshold 0.10) beside
TF-IDF over words plus character 3-grams (0.969; `measure="tfidf-mixed"`, kept for titles
with many spelling variants) and plain Jaccard on words (0.916 at best: without IDF, shared
filler words and placeholders pull unrelated titles together).

Clustering: average-linkage agglomerative clustering of the distinct normalised titles of a
service, each weighted by its number of incidents, merged while the best average similarity
between two clusters is at least `threshold`. Average linkage does not chain a cluster
through one borderline pair as single linkage does, and needs no cluster count. The
similarity matrix of a service is n x n for its n distinct titles; past `MAX_BLOCK` distinct
titles a first pass (leader clustering at a stricter threshold) folds near-identical titles
so the matrix stays bounded.

It may import agent.tickets and agent.config only (ARCHITECTURE.md): never agent.rules,
agent.promql, agent.models, agent.web, agent.daemon or agent.pipeline.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from agent.trends.history import Incident
from agent.trends.normalise import PLACEHOLDERS, normalise, tokens, tokens_without

Measure = Literal["tfidf-mixed", "tfidf-words", "jaccard"]

DEFAULT_THRESHOLD = 0.10  # chosen on seed 1 of the evaluation set (benchmarks/trends.py --tune)
DEFAULT_WORD_WEIGHT = 0.5
MAX_BLOCK = 2500  # distinct titles of one service clustered exactly; more are pre-folded
PLACEHOLDER_WEIGHT = 0.5  # a placeholder says less than a word ("<host>" is in half the titles)


@dataclass(frozen=True)
class ClusterParams:
    """How incidents are grouped. `threshold` is the least average similarity (0..1) of two
    groups that are merged; higher means smaller, purer clusters."""

    threshold: float = DEFAULT_THRESHOLD
    measure: Measure = "tfidf-words"
    word_weight: float = DEFAULT_WORD_WEIGHT


@dataclass
class Cluster:
    """Incidents of one recurring failure: same service, similar normalised titles."""

    id: str
    signature: str
    service: str
    incidents: list[Incident] = field(default_factory=list)
    titles: Counter[str] = field(default_factory=Counter)  # normalised title -> incidents

    @property
    def count(self) -> int:
        return len(self.incidents)

    @property
    def ids(self) -> list[str]:
        return [i.id for i in self.incidents]


def cluster_identity(service: str, representative: str) -> tuple[str, str]:
    """(id, signature) of a cluster: the signature is readable (service and the most common
    normalised title), the id a short stable hash of it."""
    signature = f"{service or '-'} | {representative}"
    digest = hashlib.sha256(signature.encode("utf-8")).hexdigest()[:10]
    return f"c{digest}", signature


# ---- features --------------------------------------------------------------------------------


def _features(toks: tuple[str, ...]) -> tuple[dict[str, float], dict[str, float]]:
    words: dict[str, float] = {}
    chars: dict[str, float] = {}
    for t in toks:
        if t in PLACEHOLDERS:
            words[t] = words.get(t, 0.0) + PLACEHOLDER_WEIGHT
            continue
        words[t] = words.get(t, 0.0) + 1.0
        padded = f"#{t}#"
        for i in range(len(padded) - 2):
            g = padded[i : i + 3]
            chars[g] = chars.get(g, 0.0) + 1.0
    return words, chars


class _Vectoriser:
    """TF-IDF over the distinct titles of the history (one document per distinct title)."""

    def __init__(self, token_sets: Iterable[tuple[str, ...]]) -> None:
        self.feats = {t: _features(t) for t in token_sets}
        n = len(self.feats)
        df_w: Counter[str] = Counter()
        df_c: Counter[str] = Counter()
        for w, c in self.feats.values():
            df_w.update(w.keys())
            df_c.update(c.keys())
        self.idf_w = {k: math.log((1 + n) / (1 + v)) + 1.0 for k, v in df_w.items()}
        self.idf_c = {k: math.log((1 + n) / (1 + v)) + 1.0 for k, v in df_c.items()}

    def matrix(self, block: list[tuple[str, ...]], measure: Measure, word_weight: float) -> np.ndarray:
        """Rows: the titles of `block`, as vectors whose dot products are the similarity
        (jaccard is computed elsewhere: it is not a dot product)."""
        vw: dict[str, int] = {}
        vc: dict[str, int] = {}
        for t in block:
            w, c = self.feats[t]
            for k in w:
                vw.setdefault(k, len(vw))
            if measure == "tfidf-mixed":
                for k in c:
                    vc.setdefault(k, len(vc))
        xw = np.zeros((len(block), max(1, len(vw))))
        xc = np.zeros((len(block), max(1, len(vc))))
        for r, t in enumerate(block):
            w, c = self.feats[t]
            for k, v in w.items():
                xw[r, vw[k]] = v * self.idf_w[k]
            if measure == "tfidf-mixed":
                for k, v in c.items():
                    xc[r, vc[k]] = v * self.idf_c[k]
        xw /= np.maximum(np.linalg.norm(xw, axis=1, keepdims=True), 1e-12)
        if measure != "tfidf-mixed":
            return xw
        xc /= np.maximum(np.linalg.norm(xc, axis=1, keepdims=True), 1e-12)
        return np.hstack([xw * math.sqrt(word_weight), xc * math.sqrt(1.0 - word_weight)])


def _similarity(vec: _Vectoriser, block: list[tuple[str, ...]], params: ClusterParams) -> np.ndarray:
    if params.measure == "jaccard":
        vocab: dict[str, int] = {}
        for t in block:
            for k in set(t):
                vocab.setdefault(k, len(vocab))
        x = np.zeros((len(block), max(1, len(vocab))))
        for r, t in enumerate(block):
            for k in set(t):
                x[r, vocab[k]] = 1.0
        inter = x @ x.T
        sizes = x.sum(axis=1)
        union = sizes[:, None] + sizes[None, :] - inter
        return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    x = vec.matrix(block, params.measure, params.word_weight)
    return x @ x.T


# ---- clustering ------------------------------------------------------------------------------


def average_linkage(sim: np.ndarray, weights: np.ndarray, threshold: float) -> list[list[int]]:
    """Groups of row indices: average-linkage agglomeration of a similarity matrix (rows
    weighted by `weights`), merging while the best pair's average similarity >= threshold.

    Keeps each row's best partner cached, so a merge costs O(n) unless it invalidates other
    rows' partners; about O(n^2) in all for the shapes seen here."""
    n = sim.shape[0]
    if n == 0:
        return []
    s = sim.astype(np.float64, copy=True)
    np.fill_diagonal(s, -np.inf)
    w = weights.astype(np.float64, copy=True)
    alive = np.ones(n, dtype=bool)
    members: list[list[int]] = [[i] for i in range(n)]
    best = s.argmax(axis=1) if n > 1 else np.zeros(1, dtype=int)
    best_val = s[np.arange(n), best] if n > 1 else np.array([-np.inf])
    while True:
        cand = np.where(alive, best_val, -np.inf)
        a = int(cand.argmax())
        if not math.isfinite(cand[a]) or cand[a] < threshold:
            break
        b = int(best[a])
        # merge b into a (Lance-Williams update for average linkage)
        wa, wb = w[a], w[b]
        row = (wa * s[a] + wb * s[b]) / (wa + wb)
        row[a] = -np.inf
        row[b] = -np.inf
        row[~alive] = -np.inf
        s[a, :] = row
        s[:, a] = row
        s[b, :] = -np.inf
        s[:, b] = -np.inf
        w[a] = wa + wb
        alive[b] = False
        members[a].extend(members[b])
        members[b] = []
        best_val[b] = -np.inf
        j = int(row.argmax())
        best[a], best_val[a] = j, row[j]
        # rows whose partner was a or b, or that now like a better, need a fresh look
        stale = np.where(alive & ((best == a) | (best == b)))[0]
        for i in stale:
            if i == a:
                continue
            j = int(s[i].argmax())
            best[i], best_val[i] = j, s[i, j]
        better = np.where(alive & (row > best_val))[0]
        best[better] = a
        best_val[better] = row[better]
    return [m for m in members if m]


def _leader_fold(x: np.ndarray, weights: np.ndarray, threshold: float) -> list[list[int]]:
    """Rows folded into groups whose (weighted) centroid is within `threshold` cosine: a bounded
    first pass for services with very many distinct titles (rows in decreasing weight)."""
    order = np.argsort(-weights, kind="stable")
    cent = np.zeros((0, x.shape[1]))
    groups: list[list[int]] = []
    sums: list[np.ndarray] = []
    for i in order:
        if len(groups):
            sims = cent @ x[i]
            j = int(sims.argmax())
            if sims[j] >= threshold:
                groups[j].append(int(i))
                sums[j] = sums[j] + weights[i] * x[i]
                cent[j] = sums[j] / max(np.linalg.norm(sums[j]), 1e-12)
                continue
        groups.append([int(i)])
        sums.append(weights[i] * x[i])
        cent = np.vstack([cent, x[i][None, :]])
    return groups


def cluster_incidents(incidents: Iterable[Incident], params: ClusterParams | None = None) -> list[Cluster]:
    """Clusters of `incidents` (every incident in exactly one cluster; one-offs are clusters
    of one). Deterministic: the same input gives the same clusters, ids and order (largest
    first, then by signature)."""
    params = params or ClusterParams()
    by_service: dict[str, dict[tuple[str, ...], list[Incident]]] = defaultdict(lambda: defaultdict(list))
    all_tokens: set[tuple[str, ...]] = set()
    own_words: dict[str, frozenset[str]] = {}
    for inc in incidents:
        service = inc.service.strip().lower()
        if service not in own_words:
            own_words[service] = frozenset(normalise(service).split()) | frozenset(
                normalise(re.sub(r"[-_.]", "", service)).split())
        # Inside one service its own name says nothing (half its titles carry it): drop it.
        t = tokens_without(inc.title, own_words[service]) or tokens(inc.title) or ("<empty>",)
        by_service[service][t].append(inc)
        all_tokens.add(t)
    vec = _Vectoriser(sorted(all_tokens))
    clusters: list[Cluster] = []
    for service in sorted(by_service):
        groups = by_service[service]
        block = sorted(groups, key=lambda t: (-len(groups[t]), t))
        weights = np.array([len(groups[t]) for t in block], dtype=float)
        if len(block) > MAX_BLOCK and params.measure != "jaccard":
            x = vec.matrix(block, params.measure, params.word_weight)
            folds = _leader_fold(x, weights, threshold=params.threshold + (1 - params.threshold) / 2)
            fx = np.vstack([(weights[f][:, None] * x[f]).sum(axis=0) for f in folds])
            fx /= np.maximum(np.linalg.norm(fx, axis=1, keepdims=True), 1e-12)
            fw = np.array([weights[f].sum() for f in folds])
            merged = average_linkage(fx @ fx.T, fw, params.threshold)
            parts = [[i for g in m for i in folds[g]] for m in merged]
        else:
            parts = average_linkage(_similarity(vec, block, params), weights, params.threshold)
        for part in parts:
            members = [inc for i in part for inc in groups[block[i]]]
            clusters.append(_make_cluster(service, members))
    clusters.sort(key=lambda c: (-c.count, c.signature))
    return _unique_ids(clusters)


def _make_cluster(service: str, members: list[Incident]) -> Cluster:
    members.sort(key=lambda i: (i.opened, i.id))
    titles = Counter(normalise(i.title) for i in members)
    representative = min(titles, key=lambda t: (-titles[t], len(t), t))
    shown_service = Counter(i.service.strip() for i in members).most_common(1)[0][0]
    cid, signature = cluster_identity(service, representative)
    return Cluster(id=cid, signature=signature, service=shown_service, incidents=members, titles=titles)


def _unique_ids(clusters: list[Cluster]) -> list[Cluster]:
    """Two clusters of one service may share their most common title (average linkage kept
    them apart): the later one's id gets a suffix so ids stay unique."""
    seen: dict[str, int] = {}
    for c in clusters:
        base = c.id
        seen[base] = seen.get(base, 0) + 1
        if seen[base] > 1:
            c.id = f"{base}-{seen[base]}"
            c.signature = f"{c.signature} #{seen[base]}"
    return clusters
