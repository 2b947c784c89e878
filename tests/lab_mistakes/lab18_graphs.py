"""Plausible mistakes in lab 18 and the exact total each must score (out of 10), for tests/test_labs.py.

Each entry: ({answer grade_id: wrong source}, expected total). Answers not named come from the solution.
A test cell's points are split over its checks by weight, so a mistake can lose part of a cell's points.
"""

ROW_NORMALISED = """\
def normalized_adjacency(edge_index, num_nodes):
    A = torch.eye(num_nodes)
    A[edge_index[1], edge_index[0]] = 1.0
    return A / A.sum(dim=1, keepdim=True)  # D~^-1 (A + I): the random-walk normalisation, not the symmetric one"""

TRANSPOSED_ADJACENCY = """\
def normalized_adjacency(edge_index, num_nodes):
    A = torch.eye(num_nodes)
    A[edge_index[0], edge_index[1]] = 1.0  # row = source: right only when every edge has its reverse
    d_inv_sqrt = A.sum(dim=1).rsqrt()
    return d_inv_sqrt[:, None] * A * d_inv_sqrt[None, :]"""

SWAPPED_DIRECTION = """\
def message_passing(x, edge_index, w_self, w_neigh, reduce="mean"):
    target, source = edge_index  # messages from target to source
    messages = (x @ w_neigh)[source]
    out = messages.new_zeros(x.size(0), messages.size(1))
    if reduce == "sum":
        aggregated = out.index_add(0, target, messages)
    else:
        index = target[:, None].expand_as(messages)
        aggregated = out.scatter_reduce(0, index, messages, reduce={"mean": "mean", "max": "amax"}[reduce],
                                        include_self=False)
    return x @ w_self + aggregated"""

MAX_INCLUDES_ZEROS = """\
def message_passing(x, edge_index, w_self, w_neigh, reduce="mean"):
    source, target = edge_index
    messages = (x @ w_neigh)[source]
    out = messages.new_zeros(x.size(0), messages.size(1))
    if reduce == "sum":
        aggregated = out.index_add(0, target, messages)
    else:
        index = target[:, None].expand_as(messages)
        # the default include_self=True lets the starting zeros into the max (and the mean's count)
        aggregated = out.scatter_reduce(0, index, messages, reduce={"mean": "mean", "max": "amax"}[reduce])
    return x @ w_self + aggregated"""

NO_MAX_SUBTRACTION = """\
def gat_attention(z, edge_index, a_src, a_dst, negative_slope=0.2):
    source, target = edge_index
    e = F.leaky_relu((z @ a_src)[source] + (z @ a_dst)[target], negative_slope)
    exp = e.exp()  # overflows to inf for large scores
    total = exp.new_zeros(z.size(0)).index_add(0, target, exp)
    return exp / total[target]"""

SOFTMAX_OVER_SOURCES = """\
def gat_attention(z, edge_index, a_src, a_dst, negative_slope=0.2):
    source, target = edge_index
    e = F.leaky_relu((z @ a_src)[source] + (z @ a_dst)[target], negative_slope)
    largest = e.new_full((z.size(0),), float("-inf")).scatter_reduce(0, source, e, reduce="amax")
    exp = (e - largest[source]).exp()
    total = exp.new_zeros(z.size(0)).index_add(0, source, exp)  # normalised over each node's outgoing edges
    return exp / total[source]"""

ROWS_FROM_BATCH = """\
def graph_pool(x, batch, num_graphs, reduce="sum"):
    n = int(batch.max()) + 1  # misses empty graphs at the end
    out = x.new_zeros(n, x.size(1))
    if reduce == "sum":
        return out.index_add(0, batch, x)
    index = batch[:, None].expand_as(x)
    return out.scatter_reduce(0, index, x, reduce={"mean": "mean", "max": "amax"}[reduce], include_self=False)"""

PLAIN_MEAN = """\
def smoothed_value(x, degrees):
    return float(x.mean())  # right only when every node has the same degree"""

DEGREES_WITHOUT_SELF_LOOP = """\
def smoothed_value(x, degrees):
    weights = degrees.double()  # forgets the self-loop: d_i instead of d_i + 1
    return float((weights * x.double()).sum() / weights.sum())"""

MISTAKES = [
    # adjacency-tests: checks weigh 1 + 2 + 1 visible, 1 + 1 + 1 hidden = 7. The random-walk normalisation keeps the
    # shape and the isolated node's lone self-loop (2 of 7); every value check fails, and so does the largest
    # eigenvalue (eigvalsh reads one triangle of a matrix that is no longer symmetric) -> 2 * 2/7.
    # gat-tests: 1 + 1 + 2 visible, 1 + 1 hidden = 6. Without subtracting the largest score everything passes but
    # scores in the thousands (inf / inf = nan): 5 of 6 -> 2 * 5/6.
    ({"adjacency-answer": ROW_NORMALISED, "gat-answer": NO_MAX_SUBTRACTION},
     10 - 2 * (1 - 2 / 7) - 2 * (1 - 5 / 6)),
    # A transposed adjacency is right for undirected graphs: only the directed hidden check fails (6 of 7).
    # mp-tests: 1 + 1 + 1 + 1 visible, 1 + 1 + 1 + 1 + 1 hidden = 9. Swapping source and target is invisible on an
    # undirected graph (4 visible pass) but fails the directed graph, its max, the edge order and the gradients
    # (all on the directed graph); "inputs unchanged" passes: 5 of 9.
    ({"adjacency-answer": TRANSPOSED_ADJACENCY, "mp-answer": SWAPPED_DIRECTION},
     10 - 2 * (1 - 6 / 7) - 2 * (1 - 5 / 9)),
    # include_self=True lets the starting zeros into both the max and the mean's count: shape, sum and "inputs
    # unchanged" pass (3 of 9) -> 2 * 3/9.
    # pool-tests: 1 + 1 + 1 + 1 visible, 1 hidden = 5. Taking the number of rows from batch passes the visible
    # checks and fails the hidden one with an empty graph at the end: 4 of 5 -> 2 * 4/5.
    ({"mp-answer": MAX_INCLUDES_ZEROS, "pool-answer": ROWS_FROM_BATCH},
     10 - 2 * (1 - 3 / 9) - 2 * (1 - 4 / 5)),
    # A softmax over each node's outgoing edges keeps only the shape: 1 of 6 -> 2 * 1/6.
    ({"gat-answer": SOFTMAX_OVER_SOURCES}, 10 - 2 * (1 - 1 / 6)),
    # smooth-tests: 1 visible + 3 hidden graphs = 4. The plain mean is right only for the ring, where every degree is
    # 2: 1 of 4 -> 2 * 1/4.
    ({"smooth-answer": PLAIN_MEAN}, 10 - 2 * (1 - 1 / 4)),
    # Weights d_i instead of d_i + 1 are equal again only on the ring: 1 of 4.
    ({"smooth-answer": DEGREES_WITHOUT_SELF_LOOP}, 10 - 2 * (1 - 1 / 4)),
]
