# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown]
# # 00 · Welcome: how this course works
#
# This course teaches deep learning by running it. Every idea comes with code you execute, a check that tells you
# whether it worked, and a lab where you write the important lines yourself.
#
# **Learning goals**
# - Know how the course is organised: notebooks, labs, the scale knob, self-checks and grading.
# - Confirm that your environment works offline: PyTorch, the course datasets, plotting and widgets.
#
# **Prerequisites:** Python, NumPy basics, and a terminal. No GPU needed.
#
# **Time:** a few seconds at every scale. Nothing here trains a model.

# %% [markdown]
# ## Setup
# Every notebook starts with the same cell. `dlcourse.setup` seeds Python, NumPy and PyTorch, picks the device
# (CUDA, then Apple MPS, then CPU), decides the scale, prints a one-line report of your environment and returns a
# `Config` object, `cfg`, that the rest of the notebook reads from.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import time

import torch

import dlcourse

cfg = dlcourse.setup(seed=0)
t_start = time.perf_counter()

# %% [markdown]
# ## Three scales, one notebook
#
# Deep-learning experiments range from seconds to days. Each notebook here runs at three sizes, chosen by the
# environment variable `DLCOURSE_SCALE` before Jupyter starts (for example `DLCOURSE_SCALE=smoke make lab`, or
# `%env DLCOURSE_SCALE=smoke` in a notebook before its set-up cell):
#
# | scale   | who it is for | how long |
# |---------|---------------|----------|
# | `smoke` | CI and the autograder: does every cell still run, and does the model learn *something*? | seconds |
# | `small` | you, on a laptop CPU: results worth looking at | at most about five minutes per notebook |
# | `full`  | the real experiment, on one GPU (may download real datasets, with checksums) | longer; see the course map in the README |
#
# If the variable is unset you get `full` when a CUDA GPU is present and `small` otherwise.
#
# Notebooks never test the scale with `if` statements scattered through the code. Every size that depends on the
# scale is written once, with all three values side by side, through `cfg.pick`:

# %%
num_epochs = cfg.pick(smoke=1, small=10, full=50)
print(f"scale={cfg.scale!r} on device {cfg.device} -> num_epochs = {num_epochs}")
assert cfg.scale in dlcourse.SCALES

# %% [markdown]
# ## Notebooks and labs
#
# - **`notebooks/NN_topic.ipynb`** explain a topic and run everything for you. Read them, run them, change numbers
#   and see what happens. You work on copies in `workspace/` (`make lab` fills it and opens JupyterLab there), so
#   updating the course with `git pull` never touches your edits.
# - **`labs/labNN_topic.ipynb`** are the exercises. They are generated from the instructors' `solutions/`: each
#   exercise cell has its answer replaced by
#
#   ```python
#   # YOUR CODE HERE
#   raise NotImplementedError()
#   ```
#
#   Replace those two lines with your code. The cells after an exercise test it.
#
# **Check your own work** at any time from a terminal:
#
# ```bash
# dlcourse check labs/lab01_training_loop.ipynb
# ```
#
# It runs the lab and reports every exercise as *passed*, *failed* (with the reason) or *not attempted* (the
# `NotImplementedError` is still there). Nothing is sent anywhere.
#
# **How instructors grade.** Instructors collect the submitted notebooks into one folder and run
#
# ```bash
# dlcourse grade solutions/lab01_training_loop.py SUBMISSIONS --out OUT
# ```
#
# The grader runs each submission at smoke scale, puts back the original test cells (editing a test does not
# help), adds tests that are not in your copy of the lab, and writes a gradebook CSV plus one feedback file per
# student into `OUT`. So: the checks you see are a floor, not the whole grade. Make your code correct, not just
# green.

# %% [markdown]
# ## Environment check
# The cells below check everything the course needs, without touching the network. If one fails, its message says
# what is wrong. When you ask for help, include this line:

# %%
print(dlcourse.environment_report(cfg.scale, cfg.device))

# %% [markdown]
# **PyTorch computes.** A 2×2 matrix product whose answer we know by hand, run on your device:

# %%
A = torch.tensor([[1.0, 2.0], [3.0, 4.0]], device=cfg.device)
B = torch.tensor([[5.0, 6.0], [7.0, 8.0]], device=cfg.device)
C = A @ B  # (2, 2)
print(C)
assert torch.equal(C.cpu(), torch.tensor([[19.0, 22.0], [43.0, 50.0]])), "matrix multiplication gave a wrong answer"

# %% [markdown]
# **The datasets load offline.** The course uses two datasets that need no download:
# - *digits*: 1797 handwritten digits, 8×8 grey pixels, ten classes. They ship inside scikit-learn.
# - *shapes*: coloured 32×32 images of six kinds of shape, drawn from a random seed, so any number can be made.
#
# How many shapes to draw depends on the scale (`cfg.pick` again). The time is measured here, on your machine.

# %%
digits = dlcourse.data.digits()
print("digits:", digits)
X, y = digits.train[0]
assert X.shape == (1, 8, 8) and 0.0 <= X.min() and X.max() <= 1.0
assert len(digits.train) + len(digits.val) + len(digits.test) == 1797 and len(digits.classes) == 10

n_train = cfg.pick(smoke=64, small=512, full=4000)
t0 = time.perf_counter()
shapes = dlcourse.data.shapes(n_train=n_train, n_val=32, n_test=32)
print(f"shapes: {shapes}, drawn in {time.perf_counter() - t0:.2f} s")
X, y = shapes.train[0]
assert X.shape == (3, 32, 32) and len(shapes.train) == n_train and len(shapes.classes) == 6

# %% [markdown]
# A few examples of each, titled with their labels (`dlcourse.viz.image_grid` returns a figure; leaving it as the
# last line of a cell displays it):

# %%
X_shapes = torch.stack([shapes.train[i][0] for i in range(16)])  # (16, 3, 32, 32)
y_shapes = torch.stack([shapes.train[i][1] for i in range(16)])  # (16,)
dlcourse.viz.image_grid(X_shapes, labels=y_shapes, classes=shapes.classes)

# %%
X_digits = torch.stack([digits.train[i][0] for i in range(16)])  # (16, 1, 8, 8)
y_digits = torch.stack([digits.train[i][1] for i in range(16)])  # (16,)
dlcourse.viz.image_grid(X_digits, labels=y_digits, classes=digits.classes)

# %% [markdown]
# **Widgets work.** Some notebooks have interactive explorers built with ipywidgets. Below you should see a slider.
# If you see a line of text such as `IntSlider(value=3, ...)` instead, your Jupyter front end lacks widget support:
# run the course's `make lab`, which installs JupyterLab with it. (The notebooks still run without it; you only lose
# the interactivity.)

# %%
import ipywidgets as widgets

assert int(widgets.__version__.split(".")[0]) >= 8, f"ipywidgets {widgets.__version__} is too old; need 8 or newer"
slider = widgets.IntSlider(value=3, min=0, max=10, description="try me")
display(slider)

# %% [markdown]
# ## Summary
# - Notebooks explain and run; labs (generated from `solutions/`) are where you write code, in place of
#   `# YOUR CODE HERE`.
# - `DLCOURSE_SCALE` = `smoke` | `small` | `full` sets how big every experiment is; notebooks read sizes from
#   `cfg.pick(...)`.
# - `dlcourse check labs/labNN_*.ipynb` tells you which exercises pass; instructors grade with `dlcourse grade`,
#   which also runs tests you have not seen.
# - Your environment runs PyTorch, loads both datasets offline, draws figures and shows widgets.

# %% [markdown]
# ## Your progress
# Every lab, from your own notebooks: not started, in progress (with the visible points you have) or passing its
# visible tests, and what to do next. It runs the same checks as `dlcourse check`, only for labs you changed
# since the last time; run this cell again whenever you like, or `make progress` in a terminal.

# %%
import dlcourse.progress

dlcourse.progress.show()

# %%
print(f"This notebook ran in {time.perf_counter() - t_start:.1f} s at scale {cfg.scale!r} (after the setup cell).")

# %% [markdown]
# ## Exercises
# 1. Restart the kernel with `DLCOURSE_SCALE=smoke`, then with `small`, and rerun. Which printed numbers change,
#    and which stay the same? Why does the printed `num_epochs` change but the digits split does not?
# 2. Call `dlcourse.data.shapes` twice with the same `seed` and check with `torch.equal` that the images are
#    identical; then change the seed. Why does a course that is graded automatically care about this?
# 3. Set `DLCOURSE_SCALE=tiny` and run the setup cell. Read the error message: does it tell you how to fix it?
# 4. Open `labs/lab01_training_loop.ipynb`, run `dlcourse check` on it before you write anything, and read the
#    report.
