"""Training, one module per stage: ``config`` (settings and presets), ``augment``, ``splits``,
``head`` (the probe), ``finetune`` and ``activations`` (the backbone's last blocks), ``auto`` (the
default recipe), ``loop`` (the epoch loop every phase runs), ``checkpoint`` and ``run`` (the whole
run and its directory). Start reading at ``run.train``.
"""
