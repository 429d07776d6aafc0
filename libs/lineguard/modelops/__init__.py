"""Model operations: dataset conversion and training (training needs the `train` extra; never imported at run time)."""
