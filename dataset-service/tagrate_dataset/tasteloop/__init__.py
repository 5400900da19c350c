"""The taste loop's reads (TasteLoopService, issue 26): what a user should
rate next (GetRateNext) and why their model predicts what it does for an
image (ExplainImage)."""
