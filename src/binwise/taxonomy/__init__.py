"""What the classes are and which bin each goes in: the built-in taxonomies (``classes``), taxonomy
and regional rule files (``files``, shipped ones in ``rules/``) and their checks (``checks``)."""
