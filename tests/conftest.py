import matplotlib

matplotlib.use("Agg")  # headless: tests never open a window (same as MPLBACKEND=Agg)
