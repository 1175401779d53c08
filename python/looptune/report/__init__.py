"""What looptune shows a person: tables and geometric means (:mod:`~looptune.report.tables`),
PNG plots (:mod:`~looptune.report.plots`) and progress bars (:mod:`~looptune.report.progress`)."""
