"""Plausible mistakes in lab 11 and the exact total each must score (out of 12), for tests/test_labs.py.

Each entry: ({answer grade_id: wrong source}, expected total). Answers not named come from the solution.
A test cell's points are split over its checks by weight, so a mistake can lose part of a cell's points.

Check weights per test cell:
- lora-tests (3 points): visible shapes 1, B zero 1, trainable 1, starts equal 1, formula 2; hidden A random 1,
  (B, T, in) inputs with alpha = r 1, gradients 1, dropout on the branch 1, eval mode 1, float64 1 -> 12.
- merge-tests (2 points): visible formula 2, base unchanged 1, unmerge(merge) 1; hidden float64 merge 1,
  float64 unmerge 1, trainable leaf 1 -> 7.
- inject-tests (3 points): visible names 1, wrapped 1, same layer 1, logits 1, Sequential and head 1; hidden
  fullmatch 1, Linear only 1, twelve blocks 1, non-linear pattern 1 -> 9.
- count-tests (2 points): visible trainable names 1, counts 1; hidden tied 1, buffers 1, twice 1 -> 5.
- flops-tests (2 points): visible full 1, LoRA 1, LoRA first layer 1; hidden full first layer 1, LoRA
  rectangular 1, LoRA first layer 1 -> 6.
"""

NO_SCALING = '''\
class LoRALinear(nn.Module):
    def __init__(self, base, r, alpha, dropout=0.0):
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.base(x) + self.dropout(x) @ self.lora_A.T @ self.lora_B.T   # forgot the scaling'''

SWAPPED_INIT = '''\
class LoRALinear(nn.Module):
    def __init__(self, base, r, alpha, dropout=0.0):
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        w = base.weight
        self.lora_A = nn.Parameter(torch.zeros(r, base.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.empty(base.out_features, r, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_B, a=math.sqrt(5))   # B random and A zero: the other way round
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.base(x) + self.scaling * (self.dropout(x) @ self.lora_A.T @ self.lora_B.T)'''

MERGE_IN_PLACE = '''\
def merge_lora(base, lora_A, lora_B, scaling):
    with torch.no_grad():
        base.weight += scaling * lora_B @ lora_A   # changes the pretrained layer itself
    return base


def unmerge_lora(merged, lora_A, lora_B, scaling):
    with torch.no_grad():
        merged.weight -= scaling * lora_B @ lora_A
    return merged'''

MERGE_FORGETS_BIAS = '''\
def merge_lora(base, lora_A, lora_B, scaling):
    merged = nn.Linear(base.in_features, base.out_features)   # a fresh random bias, float32, always
    with torch.no_grad():
        merged.weight.copy_(base.weight + scaling * lora_B @ lora_A)
    return merged


def unmerge_lora(merged, lora_A, lora_B, scaling):
    return merge_lora(merged, lora_A, lora_B, -scaling)'''

INJECT_WITH_SEARCH = '''\
def inject(model, pattern, make_adapter):
    replaced = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and re.search(pattern, name):   # a piece of the name is enough
            parent_name, _, child_name = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child_name, make_adapter(module))
            replaced.append(name)
    return replaced'''

INJECT_ANY_MODULE = '''\
def inject(model, pattern, make_adapter):
    replaced = []
    for name, module in list(model.named_modules()):
        if name and re.fullmatch(pattern, name):   # forgot to check that it is an nn.Linear
            parent_name, _, child_name = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child_name, make_adapter(module))
            replaced.append(name)
    return replaced'''

COUNT_STATE_DICT = '''\
def mark_only_lora_trainable(model):
    for name, param in model.named_parameters():
        param.requires_grad = "lora_" in name


def count_parameters(model):
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(t.numel() for t in model.state_dict().values())   # buffers, tied weights twice'''

MARK_ONLY_SETS_TRUE = '''\
def mark_only_lora_trainable(model):
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.requires_grad = True   # ... and forgot to freeze everything else


def count_parameters(model):
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)'''

LORA_COSTS_A_FULL_STEP = '''\
def step_flops(n_tokens, d_in, d_out, r=0, input_grad=True):
    flops = 3 * 2 * n_tokens * d_in * d_out          # forward, dL/dx and dL/dW, even for a frozen W
    if r:
        flops += 3 * 2 * n_tokens * r * (d_in + d_out)   # and the same rule for the adapter
    return flops'''

ALWAYS_INPUT_GRAD = '''\
def step_flops(n_tokens, d_in, d_out, r=0, input_grad=True):
    n = n_tokens
    flops = 2 * 2 * n * d_in * d_out                 # forward and dL/dx, whether x needs a gradient or not
    if r == 0:
        return flops + 2 * n * d_in * d_out
    return flops + 2 * n * r * (d_in + d_out) + 4 * n * r * d_out + 4 * n * r * d_in'''

MISTAKES = [
    # lora-tests: without alpha / r the init checks pass, the formula (2) fails; hidden: the (B, T, in) case and
    # the gradients use alpha = r (scaling 1) and pass, eval mode (scaling 2) and float64 (0.5) fail -> 8/12.
    # inject-tests: re.search passes all visible checks; hidden: "qkv|head" picks every qkv too, and
    # r"blocks\.1" picks the linear layers of blocks 1, 10 and 11 -> 7/9.
    ({"lora-answer": NO_SCALING, "inject-answer": INJECT_WITH_SEARCH},
     12 - 3 * (1 - 8 / 12) - 3 * (1 - 7 / 9)),
    # merge-tests: merging in place computes the right output (2) and unmerge restores W0 (1); "base unchanged"
    # fails; hidden: both float64 checks pass, the trainable-leaf check sees the base changed -> 5/7.
    # flops-tests: charging LoRA for the frozen weight's gradient (and full fine-tuning for dL/dx of a first
    # layer) passes only the visible full fine-tuning case -> 1/6.
    ({"merge-answer": MERGE_IN_PLACE, "flops-answer": LORA_COSTS_A_FULL_STEP},
     12 - 2 * (1 - 5 / 7) - 2 * (1 - 1 / 6)),
    # lora-tests: swapped init fails "B starts at zero" and "A is random" (10/12 left).
    # count-tests: counting the state_dict adds BatchNorm buffers and counts tied weights twice: only the
    # trainable names pass -> 1/5.
    ({"lora-answer": SWAPPED_INIT, "count-answer": COUNT_STATE_DICT}, 12 - 3 * (2 / 12) - 2 * (4 / 5)),
    # merge-tests: a fresh random bias fails the formula (2) and unmerge(merge) (1); only "base unchanged"
    # passes; hidden: the float64 layer gets a float32 weight and a bias -> the first hidden check raises, the
    # rest are not reached -> 1/7.
    ({"merge-answer": MERGE_FORGETS_BIAS}, 12 - 2 * (1 - 1 / 7)),
    # inject-tests: replacing containers, activations and LayerNorms too: the first four visible checks pass
    # (that pattern matches linear layers only), but r"blocks\.1\.mlp\.\d|head" also wraps the GELU mlp.1;
    # hidden: "blocks\.1" replaces a whole block, ".*" wraps containers, block 1's LayerNorms and the
    # embedding are wrapped -> 4/9.
    ({"inject-answer": INJECT_ANY_MODULE}, 12 - 3 * (1 - 4 / 9)),
    # count-tests: not freezing the other parameters fails the trainable names and (through them) the counts;
    # hidden: counting is right for the tied and BatchNorm models, "twice" fails -> 2/5.
    # flops-tests: counting dL/dx for a first layer too passes the three cases where x needs a gradient -> 3/6.
    ({"count-answer": MARK_ONLY_SETS_TRUE, "flops-answer": ALWAYS_INPUT_GRAD}, 12 - 2 * (1 - 2 / 5) - 2 * (1 - 3 / 6)),
]
