"""``binwise serve``: the web service (``app``, settings in ``config``), its request limits,
batching, user feedback (``feedback``) and the web page (``static/``)."""
