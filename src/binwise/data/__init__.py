"""Photos on disk: datasets read from folders (``dataset``), their splits' look-alikes
(``near_duplicates``) and batches of decoded photos for torch (``loader``)."""
