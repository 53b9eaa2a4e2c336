"""ParanasalSSL core: self-supervised anomaly classification of the maxillary sinuses.

This package never imports Slicer or Qt; the Slicer module (``ParanasalSSL.py`` and
``ParanasalSSLLib``) is a thin shell around it.
"""

__version__ = "0.1.0"
