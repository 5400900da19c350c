"""Training data for the trainer (TrainingDataService): the examples a model
is trained on, and which snapshot of them a published model saw."""
