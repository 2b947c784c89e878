# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 18: graph neural networks
#
# This lab goes with notebook 18. You write the pieces a graph neural network is made of, from plain tensor
# operations, and each is checked against a reference computed another way (dense matrices or loops over nodes).
#
# **Learning goals.** After this lab you can
# - build GCN's normalised adjacency matrix from an edge index;
# - write a message-passing layer that aggregates each node's incoming messages by sum, mean or max, without a
#   dense adjacency matrix;
# - compute GAT's attention weights: a softmax over each node's incoming edges, numerically stable;
# - pool node features into one vector per graph of a batch;
# - predict where repeated averaging over a graph ends up (over-smoothing), before measuring it.
#
# **How it works.** Run the setup cell first. Each exercise has an instruction cell, an answer cell and a test
# cell. Replace `raise NotImplementedError()` in the answer cell with your code, then run the test cell below
# it: it passes when it finishes without an error. Don't edit the test cells; the grader runs its own copy of
# them, and some extra hidden tests. `dlcourse check labs/lab18_graphs.ipynb` tells you what passes.
# Each exercise is graded on its own: a later one never calls your answer to an earlier one.
#
# **Time.** About 60–80 minutes. Every cell runs in seconds on a laptop CPU at any scale; no GPU needed.
#
# **Points.** 10 in all: normalised adjacency 2, message passing 2, attention weights 2, pooling 2, predicting
# the over-smoothed value 2.
#
# **Conventions (as in PyTorch Geometric).** A graph of `N` nodes has features `x` of shape `(N, F)` and an edge
# index of shape `(2, E)`, int64: column `e` is an edge from the **source** `edge_index[0, e]` to the **target**
# `edge_index[1, e]`, and messages flow from source to target. An undirected edge is stored once in each
# direction. The degree of a node is the number of edges into it.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import torch
import torch.nn.functional as F

import dlcourse
from dlcourse.grading.checks import check_close, check_equal, check_prediction

cfg = dlcourse.setup(seed=0)


def undirected(edges):
    """[(i, j), ...] -> edge index (2, 2E) holding both directions of every edge."""
    e = torch.tensor(edges, dtype=torch.long).T
    return torch.cat([e, e.flip(0)], dim=1)


def random_edges(num_nodes, num_edges, seed, directed=False):
    """num_edges distinct random edges without self-loops (both directions stored unless directed)."""
    g = torch.Generator().manual_seed(seed)
    pairs = set()
    while len(pairs) < num_edges:
        i, j = torch.randint(num_nodes, (2,), generator=g).tolist()
        if i != j and (i, j) not in pairs and (directed or (j, i) not in pairs):
            pairs.add((i, j))
    e = torch.tensor(sorted(pairs), dtype=torch.long).T
    return e if directed else torch.cat([e, e.flip(0)], dim=1)


# a small graph used by several tests: a triangle 0-1-2, a tail 2-3-4, node 5 hanging from 1
EDGES = undirected([(0, 1), (1, 2), (2, 0), (2, 3), (3, 4), (1, 5)])

# %% [markdown] nbgrader={"grade": false, "grade_id": "adjacency-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 1: the normalised adjacency matrix (2 points)
#
# GCN propagates node features with $\hat A = \tilde D^{-1/2} (A + I) \tilde D^{-1/2}$, where $A_{ij} = 1$ when
# there is an edge $j \to i$ (row $i$ lists what node $i$ receives), $I$ adds a self-loop to every node, and
# $\tilde D$ is the diagonal matrix of the degrees *counting that self-loop*, $\tilde d_i = 1 + $ (number of edges
# into $i$).
#
# Write `normalized_adjacency(edge_index, num_nodes)` returning $\hat A$ as a dense float32 tensor of shape
# `(num_nodes, num_nodes)`. The edge index has no self-loops and no repeated edges, but it may be **directed**
# (an edge without its reverse), and some nodes may have no edges at all.

# %% nbgrader={"grade": false, "grade_id": "adjacency-answer", "locked": false, "schema_version": 3, "solution": true}
def normalized_adjacency(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """(N, N) float32: D~^-1/2 (A + I) D~^-1/2 with A[i, j] = 1 for an edge j -> i."""
    ### BEGIN SOLUTION
    A = torch.eye(num_nodes)
    A[edge_index[1], edge_index[0]] = 1.0                       # row = target, column = source
    d_inv_sqrt = A.sum(dim=1).rsqrt()                            # (N,) degrees with the self-loop
    return d_inv_sqrt[:, None] * A * d_inv_sqrt[None, :]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "adjacency-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _adjacency_by_loops(edge_index, num_nodes):
    """The reference, entry by entry: 1 / sqrt(d~_i d~_j) for every edge j -> i and for i = j."""
    degree = [1] * num_nodes
    for j, i in edge_index.T.tolist():
        degree[i] += 1
    out = torch.zeros(num_nodes, num_nodes, dtype=torch.float64)
    for j, i in edge_index.T.tolist() + [(n, n) for n in range(num_nodes)]:
        out[i, j] = 1 / (degree[i] * degree[j]) ** 0.5
    return out.float()


_A = normalized_adjacency(EDGES, 6)
assert isinstance(_A, torch.Tensor), f"normalized_adjacency should return a tensor, not {type(_A).__name__}"
check_equal("shape (N, N) and dtype float32", [tuple(_A.shape), str(_A.dtype)], expected=[(6, 6), "torch.float32"],
            hint="a dense (num_nodes, num_nodes) float32 tensor")
check_close("values for the small graph", _A, expected=_adjacency_by_loops(EDGES, 6), atol=1e-6, weight=2,
            hint="add the self-loops before computing the degrees, and divide entry (i, j) by sqrt(d~_i d~_j) "
                 "(not by d~_i alone)")
_A7 = normalized_adjacency(EDGES, 7)
check_close("a node with no edges keeps only its self-loop (weight 1)", [_A7[6], _A7[:, 6]],
            expected=[torch.eye(7)[6], torch.eye(7)[6]], atol=1e-6,
            hint="with the self-loop every node has degree at least 1, so nothing is divided by 0")
print("normalized_adjacency: visible tests passed")

### BEGIN HIDDEN TESTS
_e = random_edges(30, 60, seed=1)
check_close("a random undirected graph of 30 nodes", normalized_adjacency(_e, 30),
            expected=_adjacency_by_loops(_e, 30), atol=1e-6, hint="see the formula above")
_d = random_edges(12, 25, seed=2, directed=True)
check_close("a directed graph: A[i, j] = 1 for an edge j -> i, degrees count incoming edges",
            normalized_adjacency(_d, 12), expected=_adjacency_by_loops(_d, 12), atol=1e-6,
            hint="the row is the target edge_index[1], the column the source edge_index[0]")
check_close("largest eigenvalue 1 (an undirected graph)", torch.linalg.eigvalsh(normalized_adjacency(_e, 30)).max(),
            expected=torch.tensor(1.0), atol=1e-5, hint="symmetric normalisation with self-loops")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "mp-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 2: a message-passing layer (2 points)
#
# Write `message_passing(x, edge_index, w_self, w_neigh, reduce)` computing, for every node $i$,
# $$h'_i = x_i W_\text{self} + \operatorname{reduce}_{\,j \to i}\; x_j W_\text{neigh},$$
# where the reduction runs over the edges **into** $i$ and is `"sum"`, `"mean"` or `"max"` (element-wise).
# `x` is `(N, F_in)`, the weights are `(F_in, F_out)`, the result `(N, F_out)`.
#
# - A node that receives no message aggregates to **0**.
# - Build no `(N, N)` matrix: gather one message per edge and scatter them into their targets (`index_add_`,
#   `scatter_reduce`). Real graphs have millions of nodes.
# - Gradients must flow to `x` and both weights, and the inputs stay unchanged.

# %% nbgrader={"grade": false, "grade_id": "mp-answer", "locked": false, "schema_version": 3, "solution": true}
def message_passing(x: torch.Tensor, edge_index: torch.Tensor, w_self: torch.Tensor, w_neigh: torch.Tensor,
                    reduce: str = "mean") -> torch.Tensor:
    """h'_i = x_i W_self + reduce over edges j -> i of x_j W_neigh; (N, F_in) -> (N, F_out)."""
    ### BEGIN SOLUTION
    source, target = edge_index
    messages = (x @ w_neigh)[source]                                  # (E, F_out), one per edge
    out = messages.new_zeros(x.size(0), messages.size(1))
    if reduce == "sum":
        aggregated = out.index_add(0, target, messages)
    else:
        index = target[:, None].expand_as(messages)
        aggregated = out.scatter_reduce(0, index, messages, reduce={"mean": "mean", "max": "amax"}[reduce],
                                        include_self=False)
    return x @ w_self + aggregated
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "mp-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _mp_by_loops(x, edge_index, w_self, w_neigh, reduce):
    """The reference: for each node, stack the messages of its incoming edges and reduce them."""
    rows = []
    for i in range(x.size(0)):
        sources = edge_index[0][edge_index[1] == i]
        m = x[sources] @ w_neigh
        if len(sources) == 0:
            agg = torch.zeros(w_neigh.size(1), dtype=x.dtype)
        else:
            agg = {"sum": m.sum(0), "mean": m.mean(0), "max": m.max(0).values}[reduce]
        rows.append(x[i] @ w_self + agg)
    return torch.stack(rows)


def _mp_inputs(seed, n, f_in, f_out, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, f_in, generator=g, dtype=dtype), torch.randn(f_in, f_out, generator=g, dtype=dtype),
            torch.randn(f_in, f_out, generator=g, dtype=dtype))


_x, _ws, _wn = _mp_inputs(0, 7, 3, 4)                             # node 6 has no edges
_out = message_passing(_x, EDGES, _ws, _wn, "sum")
assert isinstance(_out, torch.Tensor), f"message_passing should return a tensor, not {type(_out).__name__}"
check_equal("shape (N, F_out)", tuple(_out.shape), expected=(7, 4), hint="one row per node, F_out columns")
for _reduce in ("sum", "mean", "max"):
    check_close(f"reduce={_reduce!r} on the small graph", message_passing(_x, EDGES, _ws, _wn, _reduce),
                expected=_mp_by_loops(_x, EDGES, _ws, _wn, _reduce), atol=1e-5,
                hint="messages x_j W_neigh gathered by source, reduced by target; a node without incoming edges "
                     "aggregates to 0 (for max: do not let the zeros you start from take part, include_self=False)")
print("message_passing: visible tests passed")

### BEGIN HIDDEN TESTS
_d = random_edges(15, 40, seed=4, directed=True)
_x, _ws, _wn = _mp_inputs(5, 15, 6, 3)
check_close("a directed graph: messages go from edge_index[0] to edge_index[1]",
            [message_passing(_x, _d, _ws, _wn, _r) for _r in ("sum", "mean", "max")],
            expected=[_mp_by_loops(_x, _d, _ws, _wn, _r) for _r in ("sum", "mean", "max")], atol=1e-5,
            hint="gather the messages at the sources and scatter them into the targets, not the other way round")
_x, _ws, _wn = _mp_inputs(6, 15, 6, 3)
_x = _x - 10                                                       # every message negative
check_close("max over negative messages", message_passing(_x, _d, _ws.abs(), _wn.abs(), "max"),
            expected=_mp_by_loops(_x, _d, _ws.abs(), _wn.abs(), "max"), atol=1e-4,
            hint="a zero you start from must not win the max: scatter_reduce(..., include_self=False)")
_perm = torch.randperm(_d.size(1), generator=torch.Generator().manual_seed(7))
check_close("the order of the edges does not matter",
            message_passing(_x, _d[:, _perm], _ws, _wn, "mean"), expected=_mp_by_loops(_x, _d, _ws, _wn, "mean"),
            atol=1e-4, hint="sum, mean and max do not depend on the order of the messages")
_x, _ws, _wn = _mp_inputs(8, 15, 6, 3, dtype=torch.float64)
_params = [t.clone().requires_grad_() for t in (_x, _ws, _wn)]
_grads = torch.autograd.grad(message_passing(*_params[:1], _d, *_params[1:], "mean").square().sum(), _params)
_params_ref = [t.clone().requires_grad_() for t in (_x, _ws, _wn)]
_grads_ref = torch.autograd.grad(_mp_by_loops(_params_ref[0], _d, *_params_ref[1:], "mean").square().sum(),
                                 _params_ref)
check_close("gradients with respect to x, w_self and w_neigh", list(_grads), expected=list(_grads_ref), atol=1e-8,
            hint="use differentiable operations only (index_add / scatter_reduce out of place, no .detach())")
message_passing(_x, _d, _ws, _wn, "max")
check_equal("leaves the inputs unchanged", [_x, _ws, _wn], expected=list(_mp_inputs(8, 15, 6, 3, torch.float64)),
            hint="no in-place operations on x or the weights")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "gat-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 3: GAT's attention weights (2 points)
#
# A graph attention layer (one head) scores every edge $j \to i$ from the transformed features $z = xW$ of its two
# ends,
# $$e_{ij} = \mathrm{LeakyReLU}\big(a_\text{src}^\top z_j + a_\text{dst}^\top z_i\big)$$
# with negative slope `negative_slope` (0.2 in GAT), and turns the scores into weights with a softmax over the
# edges **into the same target** $i$: $\alpha_{ij} = \exp(e_{ij}) / \sum_{k \to i} \exp(e_{ik})$.
#
# Write `gat_attention(z, edge_index, a_src, a_dst, negative_slope=0.2)` returning the weights as a tensor of
# shape `(E,)`, in the order of the edges of `edge_index` (which already contains whatever self-loops the layer
# wants: add none). It must stay finite for scores in the thousands, where `exp` overflows: use the fact that a
# softmax does not change when a constant is subtracted from all the scores of one target.

# %% nbgrader={"grade": false, "grade_id": "gat-answer", "locked": false, "schema_version": 3, "solution": true}
def gat_attention(z: torch.Tensor, edge_index: torch.Tensor, a_src: torch.Tensor, a_dst: torch.Tensor,
                  negative_slope: float = 0.2) -> torch.Tensor:
    """z (N, C), a_src and a_dst (C,) -> attention weights (E,), summing to 1 over the edges into each node."""
    ### BEGIN SOLUTION
    source, target = edge_index
    e = F.leaky_relu((z @ a_src)[source] + (z @ a_dst)[target], negative_slope)     # (E,)
    largest = e.new_full((z.size(0),), float("-inf")).scatter_reduce(0, target, e, reduce="amax")
    exp = (e - largest[target]).exp()                                                 # (E,) all <= 1
    total = exp.new_zeros(z.size(0)).index_add(0, target, exp)
    return exp / total[target]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "gat-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _attention_by_loops(z, edge_index, a_src, a_dst, negative_slope=0.2):
    """The reference: for each target node, a torch.softmax over the scores of its incoming edges."""
    alpha = torch.zeros(edge_index.size(1), dtype=z.dtype)
    for i in range(z.size(0)):
        into_i = (edge_index[1] == i).nonzero().flatten()
        if len(into_i):
            scores = F.leaky_relu(z[edge_index[0, into_i]] @ a_src + z[i] @ a_dst, negative_slope)
            alpha[into_i] = torch.softmax(scores, dim=0)
    return alpha


def _gat_inputs(seed, n, c, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * scale, torch.randn(c, generator=g), torch.randn(c, generator=g)


_loops = torch.arange(6).repeat(2, 1)
_edges = torch.cat([EDGES, _loops], dim=1)                       # the small graph with self-loops
_z, _as, _ad = _gat_inputs(0, 6, 4)
_alpha = gat_attention(_z, _edges, _as, _ad)
assert isinstance(_alpha, torch.Tensor), f"gat_attention should return a tensor, not {type(_alpha).__name__}"
check_equal("one weight per edge: shape (E,)", tuple(_alpha.shape), expected=(18,), hint="(E,), edges in order")
check_close("the weights into each node sum to 1", torch.zeros(6).index_add(0, _edges[1], _alpha),
            expected=torch.ones(6), atol=1e-5,
            hint="normalise over the edges that share a target (edge_index[1]), not a source")
check_close("values on the small graph", _alpha, expected=_attention_by_loops(_z, _edges, _as, _ad), atol=1e-5,
            weight=2, hint="e_ij = leaky_relu(a_src · z_j + a_dst · z_i) with j the source and i the target")
print("gat_attention: visible tests passed")

### BEGIN HIDDEN TESTS
_d = random_edges(20, 60, seed=9, directed=True)
_z, _as, _ad = _gat_inputs(10, 20, 5)
check_close("a directed graph, negative slope 0.2 and 0.5",
            [gat_attention(_z, _d, _as, _ad), gat_attention(_z, _d, _as, _ad, negative_slope=0.5)],
            expected=[_attention_by_loops(_z, _d, _as, _ad), _attention_by_loops(_z, _d, _as, _ad, 0.5)],
            atol=1e-5, hint="source = edge_index[0], target = edge_index[1]; pass negative_slope to leaky_relu")
_z, _as, _ad = _gat_inputs(11, 6, 4, scale=1000.0)               # scores in the thousands
_alpha = gat_attention(_z, _edges, _as, _ad)
check_close("scores in the thousands: finite and right", _alpha,
            expected=_attention_by_loops(_z, _edges, _as, _ad), atol=1e-5,
            hint="subtract each target's largest score before exp (scatter_reduce with reduce='amax')")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "pool-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 4: pooling a batch of graphs (2 points)
#
# A batch of graphs is stored as one graph: node features `x` of shape `(N, F)` for all nodes of all graphs, and
# a vector `batch` of shape `(N,)` giving the graph (`0 .. num_graphs - 1`) of each node. Write
# `graph_pool(x, batch, num_graphs, reduce)` returning one row per graph, `(num_graphs, F)`: the sum, mean or
# (element-wise) max of the features of its nodes, for `reduce` = `"sum"`, `"mean"`, `"max"`.
#
# The nodes of one graph need not be contiguous, and a graph may have no nodes at all (its row is 0): the number
# of rows comes from `num_graphs`, not from `batch`.

# %% nbgrader={"grade": false, "grade_id": "pool-answer", "locked": false, "schema_version": 3, "solution": true}
def graph_pool(x: torch.Tensor, batch: torch.Tensor, num_graphs: int, reduce: str = "sum") -> torch.Tensor:
    """x (N, F), batch (N,) graph ids -> (num_graphs, F): sum, mean or max over each graph's nodes."""
    ### BEGIN SOLUTION
    out = x.new_zeros(num_graphs, x.size(1))
    if reduce == "sum":
        return out.index_add(0, batch, x)
    index = batch[:, None].expand_as(x)
    return out.scatter_reduce(0, index, x, reduce={"mean": "mean", "max": "amax"}[reduce], include_self=False)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "pool-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _pool_by_loops(x, batch, num_graphs, reduce):
    rows = []
    for g in range(num_graphs):
        xs = x[batch == g]
        rows.append(torch.zeros(x.size(1), dtype=x.dtype) if len(xs) == 0
                    else {"sum": xs.sum(0), "mean": xs.mean(0), "max": xs.max(0).values}[reduce])
    return torch.stack(rows)


_x = torch.randn(9, 3, generator=torch.Generator().manual_seed(0))
_batch = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
_out = graph_pool(_x, _batch, 3, "sum")
assert isinstance(_out, torch.Tensor), f"graph_pool should return a tensor, not {type(_out).__name__}"
check_equal("shape (num_graphs, F)", tuple(_out.shape), expected=(3, 3), hint="one row per graph")
for _reduce in ("sum", "mean", "max"):
    check_close(f"reduce={_reduce!r}, three graphs", graph_pool(_x, _batch, 3, _reduce),
                expected=_pool_by_loops(_x, _batch, 3, _reduce), atol=1e-6,
                hint="reduce over the nodes of each graph separately: the mean divides by that graph's node count")
print("graph_pool: visible tests passed")

### BEGIN HIDDEN TESTS
_x = torch.randn(20, 4, generator=torch.Generator().manual_seed(1)) - 5      # all features negative
_batch = torch.randint(4, (20,), generator=torch.Generator().manual_seed(2))  # graphs 0..3, shuffled
_batch[_batch == 2] = 1                                                        # graph 2 is empty
check_close("nodes in any order, an empty graph, negative features, one more empty graph at the end",
            [graph_pool(_x, _batch, 5, _r) for _r in ("sum", "mean", "max")],
            expected=[_pool_by_loops(_x, _batch, 5, _r) for _r in ("sum", "mean", "max")], atol=1e-5,
            hint="take the number of rows from num_graphs, give an empty graph zeros, and do not let the zeros you "
                 "start from take part in the max (include_self=False)")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "smooth-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 5: predict where over-smoothing ends (2 points)
#
# Predict first, measure second. Take a **connected** graph, add a self-loop to every node, and replace each
# node's value by the average over itself and its neighbours, again and again: $x \leftarrow \tilde D^{-1} \tilde A
# \, x$ with $\tilde A = A + I$ (a random-walk step, a cousin of GCN's $\hat A$). After many steps every node
# holds the same number: the graph has been smoothed flat, which is what happens to the features of a very deep
# GCN.
#
# Which number? Write `smoothed_value(x, degrees)` that returns it as a float, from the starting values `x`
# (shape `(N,)`) and the nodes' degrees `degrees` (shape `(N,)`, the number of neighbours of each node, **not**
# counting the self-loop). You get no edges, so you cannot run the averaging: reason about what one step keeps
# unchanged. (Hint: think of $\pi^\top x$ for a vector $\pi$ with $\pi^\top \tilde D^{-1} \tilde A = \pi^\top$.)
# The test cell then runs 2,000 steps on real graphs, some hidden. **Tolerance: 0.01 % (rtol = 1e-4).** Is it the
# plain mean of `x`? When would it be?

# %% nbgrader={"grade": false, "grade_id": "smooth-answer", "locked": false, "schema_version": 3, "solution": true}
def smoothed_value(x: torch.Tensor, degrees: torch.Tensor) -> float:
    """The value every node converges to under x <- D~^-1 (A + I) x on a connected graph."""
    ### BEGIN SOLUTION
    weights = degrees.double() + 1                                 # pi_i proportional to d_i + 1
    return float((weights * x.double()).sum() / weights.sum())
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "smooth-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _smooth(x, edge_index, num_nodes, steps=2000):
    """Measure: run the averaging `steps` times in float64 and return the (now equal) node values."""
    A = torch.eye(num_nodes, dtype=torch.float64)
    A[edge_index[1], edge_index[0]] = 1.0
    P = A / A.sum(dim=1, keepdim=True)                             # D~^-1 (A + I), rows sum to 1
    h = x.double()
    for _ in range(steps):
        h = P @ h
    assert (h.max() - h.min()) < 1e-9 * h.abs().max(), "not converged"
    return h.mean().item()


def _degrees(edge_index, num_nodes):
    return torch.zeros(num_nodes, dtype=torch.long).index_add(0, edge_index[1], torch.ones_like(edge_index[1]))


_x = torch.tensor([3.0, -1.0, 4.0, 1.0, -5.0, 9.0])
check_prediction("the smoothed value of the small graph (triangle with a tail)",
                 smoothed_value(_x, _degrees(EDGES, 6)), expected=_smooth(_x, EDGES, 6), rtol=1e-4,
                 hint="one averaging step keeps a weighted sum of the values unchanged; which weights? (the plain "
                      "mean only for graphs where every node has the same degree)")
print("smoothed_value: visible test passed")

### BEGIN HIDDEN TESTS
_star = undirected([(0, k) for k in range(1, 8)])
_x = torch.arange(8.0) ** 2
check_prediction("a star of 8 nodes", smoothed_value(_x, _degrees(_star, 8)), expected=_smooth(_x, _star, 8),
                 rtol=1e-4, hint="the centre has 7 neighbours, each leaf 1; count the self-loop too")
_ring = undirected([(k, (k + 1) % 9) for k in range(9)])
_x = torch.randn(9, generator=torch.Generator().manual_seed(0))
check_prediction("a ring of 9 nodes (every degree 2)", smoothed_value(_x, _degrees(_ring, 9)),
                 expected=_smooth(_x, _ring, 9), rtol=1e-4, hint="a regular graph: all weights equal")
_tree = undirected([(k, (k - 1) // 2) for k in range(1, 15)])      # a binary tree of 15 nodes
_x = torch.randn(15, generator=torch.Generator().manual_seed(1)) + 2
check_prediction("a binary tree of 15 nodes", smoothed_value(_x, _degrees(_tree, 15)),
                 expected=_smooth(_x, _tree, 15), rtol=1e-4, hint="weights d_i + 1")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "smooth-look", "locked": true, "schema_version": 3, "solution": false}
# Not graded: the values of the small graph step by step, and your prediction. The spread shrinks by a roughly
# constant factor per step (the second-largest eigenvalue of $\tilde D^{-1}\tilde A$): that is over-smoothing.

# %% nbgrader={"grade": false, "grade_id": "smooth-table", "locked": true, "schema_version": 3, "solution": false}
_x = torch.tensor([3.0, -1.0, 4.0, 1.0, -5.0, 9.0], dtype=torch.float64)
_A = torch.eye(6, dtype=torch.float64)
_A[EDGES[1], EDGES[0]] = 1.0
_P = _A / _A.sum(dim=1, keepdim=True)
for _k in range(41):
    if _k in (0, 1, 2, 5, 10, 20, 40):
        print(f"step {_k:>2}: " + " ".join(f"{v:7.3f}" for v in _x.tolist()) + f"   spread {_x.max() - _x.min():.2e}")
    _x = _P @ _x
try:
    print(f"your prediction: {smoothed_value(torch.tensor([3.0, -1.0, 4.0, 1.0, -5.0, 9.0]), _degrees(EDGES, 6)):.3f}")
except Exception:                                                  # not written yet, or failing
    print("your prediction: -")

# %% [markdown] nbgrader={"grade": false, "grade_id": "summary", "locked": true, "schema_version": 3, "solution": false}
# ## Summary
#
# - GCN's $\hat A = \tilde D^{-1/2}(A + I)\tilde D^{-1/2}$ weights the edge $j \to i$ by $1/\sqrt{\tilde d_i
#   \tilde d_j}$; the self-loop keeps a node's own features and guarantees no division by zero.
# - Message passing gathers one message per edge (`x[source]`) and scatters them into the targets: `index_add` for
#   sums, `scatter_reduce` for means and maxima (with `include_self=False`), no `(N, N)` matrix.
# - GAT's softmax runs over each node's incoming edges; subtracting each node's largest score keeps it finite.
# - Pooling is the same scatter with the graph id as the target; the number of graphs comes from the batch size.
# - Repeated averaging converges to the degree-weighted mean $\sum_i (d_i + 1) x_i / \sum_i (d_i + 1)$: every node
#   forgets where it started.
#
# ## Further exercises (not graded)
#
# 1. Turn `message_passing` into an `nn.Module` (GraphSAGE) and compare it with `torch_geometric.nn.SAGEConv`
#    given the same weights (`lin_l` is the neighbour weight, `lin_r` the node's own).
# 2. Extend `gat_attention` to `H` heads (`z` of shape `(N, H, C)`, `a_src` and `a_dst` of shape `(H, C)`) and
#    check it against the weights `GATConv(..., return_attention_weights=True)` returns.
# 3. For GCN's symmetric $\hat A$, what does $\hat A^k x$ converge to? (It is not constant: find the eigenvector.)
# 4. How many steps does the small graph need to bring the spread below $10^{-6}$? Predict it from the eigenvalues
#    of $\tilde D^{-1}\tilde A$, then count.
