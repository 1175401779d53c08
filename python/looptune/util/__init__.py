"""Small shared helpers: safe file I/O (:mod:`~looptune.util.fileio`) and argument checks
(:mod:`~looptune.util.validate`)."""
