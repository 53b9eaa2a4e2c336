"""Slicer-side helpers of the ParanasalSSL module.

Each file has one job. They may import ``slicer`` (MRML) and ``vtk`` but never ``qt`` at import
time, so they run (and are tested) against a real MRML scene without the Slicer application.
The work itself lives in the core package ``paranasal_ssl``, which never imports Slicer.
"""
