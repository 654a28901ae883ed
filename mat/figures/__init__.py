"""The paper's figures: Figure 1 (interpretable.py, interpretable_figure.py), its sigma sweep
(sigma_sweep.py, sigma_sweep_figure.py), Figure 3 (toy_regression.py, toy_regression_figure.py,
full_batch_fit.py) and the memorisation histograms (memorization_figure.py). The scripts at the
repository root run them; they train with the same XRM twins and MAT as main.py."""
