"""The paper's figures: Figure 1 (interpretable.py, interpretable_figure.py), Figure 3
(toy_regression.py, toy_regression_figure.py, full_batch_fit.py) and their plotting
(plotting.py). The scripts at the repository root run them; the methods live in XRM."""
