"""Case review: click through a list of scans, record the reader's verdicts, export them as
labels that ``paranasal-ssl finetune`` accepts, and write a browser QA report.

- ``case_list``: the list of cases (a folder of scans or a manifest CSV; ROIs and prior labels
  optional).
- ``predictions``: reads what ``paranasal-ssl predict --manifest`` wrote (per case folders).
- ``session``: the reader's verdicts and navigation state, saved atomically after every change
  to ``<list stem>.review-<reader>.json`` next to the case list.
- ``export``: labels manifest, disagreement table, heatmap / region images.
- ``html_report``: one HTML page with axial and coronal slices per case side.

Nothing here imports Slicer or Qt; the Slicer module drives the same objects.
"""
