"""Applications: the ``sdekit`` command (parsing only), the web page, the demo and evaluation reports."""
