"""What a wrong bin costs: ``cost[a, b]`` of putting an item of bin ``a`` into bin ``b``.

Not every mistake is equal. A battery, paint or medicine in another stream can start fires and
pollute (the costliest); a recyclable item in residual waste is a resource lost and little harm;
any other wrong bin contaminates a stream that a sorting plant must clean. Bins are recognised by
their ids in binwise's taxonomies and shipped rules; bins it does not know cost ``OTHER_MISTAKE``.
A taxonomy or rule file may state its own costs (``Taxonomy.costs``); they replace these pair by pair.
"""

from __future__ import annotations

import numpy as np

from .classes import Taxonomy

HAZARDOUS_IDS = frozenset({"hazardous"})
RESIDUAL_IDS = frozenset({"dry", "other", "residual"})
RECYCLABLE_IDS = frozenset({"recyclable", "paper", "glass", "packaging", "recycling_centre"})
HAZARDOUS_ELSEWHERE = 10.0
RECYCLABLE_AS_RESIDUAL = 1.0
OTHER_MISTAKE = 3.0


def bin_costs(taxonomy: Taxonomy) -> np.ndarray:
    """(bins, bins) costs: rows the item's true bin, columns the bin it went into; 0 when right."""
    ids = [b.id for b in taxonomy.bins]
    costs = np.full((len(ids), len(ids)), OTHER_MISTAKE)
    for a, true_bin in enumerate(ids):
        for b, chosen in enumerate(ids):
            if a == b:
                costs[a, b] = 0.0
            elif true_bin in HAZARDOUS_IDS:
                costs[a, b] = HAZARDOUS_ELSEWHERE
            elif true_bin in RECYCLABLE_IDS and chosen in RESIDUAL_IDS:
                costs[a, b] = RECYCLABLE_AS_RESIDUAL
    for true_bin, chosen, cost in taxonomy.costs:
        costs[ids.index(true_bin), ids.index(chosen)] = cost
    return costs


def hazardous_bins(taxonomy: Taxonomy) -> list[int]:
    return [i for i, b in enumerate(taxonomy.bins) if b.id in HAZARDOUS_IDS]
