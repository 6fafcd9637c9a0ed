"""The model: the network (``network``), its file and metadata (``file``, ``metadata``), the rule
that turns its outputs into statuses (``status``, ``novelty``) and regional re-binning (``rebin``)."""
