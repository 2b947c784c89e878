"""Tests for dlcourse.config: seeding, the scale knob, device choice and the one-line environment report."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch

from dlcourse import config
from dlcourse.config import SCALE_ENV, SCALES, Config, ScaleError, pick_device, resolve_scale, setup


@pytest.fixture
def no_env(monkeypatch):
    """No DLCOURSE_SCALE in the environment (``make test`` sets it to smoke)."""
    monkeypatch.delenv(SCALE_ENV, raising=False)
    return monkeypatch


def _cuda(monkeypatch, available: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)


def _draws() -> tuple[torch.Tensor, np.ndarray, list[float]]:
    return torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)]


# --- seeding ------------------------------------------------------------------------------------------------

def test_setup_makes_torch_numpy_and_random_repeat():
    setup(seed=123, scale="smoke", quiet=True)
    first = _draws()
    torch.rand(3), np.random.rand(3), random.random()  # move every generator on
    setup(seed=123, scale="smoke", quiet=True)
    second = _draws()
    assert torch.equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert first[2] == second[2]


def test_different_seeds_give_different_draws():
    setup(seed=1, scale="smoke", quiet=True)
    a = _draws()
    setup(seed=2, scale="smoke", quiet=True)
    b = _draws()
    assert not torch.equal(a[0], b[0])
    assert not np.array_equal(a[1], b[1])
    assert a[2] != b[2]


def test_seed_everything_seeds_model_initialisation():
    config.seed_everything(7)
    w1 = torch.nn.Linear(4, 3).weight.detach().clone()
    config.seed_everything(7)
    w2 = torch.nn.Linear(4, 3).weight.detach().clone()
    assert torch.equal(w1, w2)


def test_setup_returns_config_with_seed_scale_device():
    cfg = setup(seed=5, scale="small", quiet=True)
    assert cfg == Config(seed=5, scale="small", device=pick_device())
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.scale = "full"  # type: ignore[misc]


# --- scale resolution ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("cuda", "expected"), [(True, "full"), (False, "small")])
def test_default_scale_is_full_with_cuda_else_small(no_env, cuda, expected):
    _cuda(no_env, cuda)
    no_env.setattr(config, "gpu_fits_full_scale", lambda index=0: (cuda, "a GPU"))
    assert resolve_scale() == expected
    assert setup(quiet=True).scale == expected


class _Props:
    def __init__(self, major: int, minor: int, gib: float, name: str = "Some GPU") -> None:
        self.major, self.minor, self.total_memory, self.name = major, minor, int(gib * 2**30), name


@pytest.mark.parametrize(("props", "fits", "words"), [
    (_Props(7, 5, 15, "Tesla T4"), True, "Tesla T4"),
    (_Props(9, 0, 80, "H100"), True, "H100"),
    (_Props(3, 7, 12, "Tesla K80"), False, "older than Volta"),
    (_Props(8, 6, 4, "laptop GPU"), False, "less than 10 GiB"),
])
def test_gpu_fits_full_scale_by_capability_and_memory(no_env, props, fits, words):
    _cuda(no_env, True)
    no_env.setattr(torch.cuda, "get_device_properties", lambda index=0: props)
    ok, reason = config.gpu_fits_full_scale()
    assert ok is fits
    assert words in reason and props.name in reason
    assert resolve_scale() == ("full" if fits else "small")


def test_no_cuda_no_full_scale_and_no_reason(no_env):
    _cuda(no_env, False)
    assert config.gpu_fits_full_scale() == (False, "")


def test_setup_says_why_a_weak_gpu_runs_small(no_env, capsys):
    no_env.setattr(config, "gpu_fits_full_scale", lambda index=0: (False, "Tesla K80 is older than Volta"))
    no_env.setattr(config, "pick_device", lambda: torch.device("cuda"))
    no_env.setattr(config, "environment_report", lambda scale, device: "report")
    cfg = setup(seed=0)
    assert cfg.scale == "small"
    out = capsys.readouterr().out
    assert "Tesla K80 is older than Volta" in out and "DLCOURSE_SCALE=full" in out


# --- device facts shared by notebooks 05, 07, 09, 10 --------------------------------------------------------

def test_amp_dtype_is_bfloat16_on_cpu():
    assert config.amp_dtype("cpu") == torch.bfloat16
    assert config.amp_dtype(torch.device("cpu")) == torch.bfloat16


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float16)])
def test_amp_dtype_on_cuda_follows_native_bfloat16(monkeypatch, native, expected):
    seen = {}

    def is_bf16_supported(including_emulation=True):
        seen["including_emulation"] = including_emulation
        return native

    class _NoSwitch:
        def __init__(self, index):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "device", _NoSwitch)
    assert config.amp_dtype(torch.device("cuda", 0)) == expected
    assert seen["including_emulation"] is False  # emulated bfloat16 is slower than float32: never pick it


def test_amp_dtype_mps_is_float16():
    assert config.amp_dtype("mps") == torch.float16


def test_tf32_status_reports_both_switches():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:  # (the cuBLAS switch is a module attribute monkeypatch cannot restore)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True
        assert config.tf32_status() == "TF32 matmul off, cuDNN conv on"
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = True, False
        assert config.tf32_status() == "TF32 matmul on, cuDNN conv off"
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_safe_mp_context_never_forks_the_caller():
    import multiprocessing as mp

    ctx = config.safe_mp_context()
    assert ctx.get_start_method() in ("forkserver", "spawn")
    if "forkserver" in mp.get_all_start_methods():
        assert ctx.get_start_method() == "forkserver"


def test_safe_mp_context_pools_every_callers_preload(monkeypatch):
    import multiprocessing as mp

    if "forkserver" not in mp.get_all_start_methods():
        pytest.skip("no fork server on this platform (spawn has nothing to preload)")
    monkeypatch.setattr(config, "_FORKSERVER_PRELOAD", set())
    seen = []
    monkeypatch.setattr(type(mp.get_context("forkserver")), "set_forkserver_preload",
                        lambda self, names: seen.append(list(names)))
    config.safe_mp_context(preload=["torch", "dlcourse.data"])
    config.safe_mp_context(preload=("torch.distributed",))
    config.safe_mp_context()
    both = ["dlcourse.data", "torch", "torch.distributed"]
    assert seen == [["dlcourse.data", "torch"], both, both]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_report_on_cuda_names_gpu_bf16_and_tf32():
    report = config.environment_report("full", torch.device("cuda"))
    assert torch.cuda.get_device_name(0) in report
    assert "TF32 matmul" in report and "bf16" in report
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    assert config.amp_dtype("cuda") == expected


@pytest.mark.parametrize("cuda", [True, False])
def test_env_var_beats_default(no_env, cuda):
    _cuda(no_env, cuda)
    no_env.setenv(SCALE_ENV, "smoke")
    assert resolve_scale() == "smoke"
    assert setup(quiet=True).scale == "smoke"


@pytest.mark.parametrize(("env", "arg"), [("smoke", "full"), ("full", "smoke"), ("small", "smoke")])
def test_argument_beats_env_var(no_env, env, arg):
    no_env.setenv(SCALE_ENV, env)
    assert resolve_scale(arg) == arg
    assert setup(scale=arg, quiet=True).scale == arg


def test_empty_env_var_counts_as_unset(no_env):
    _cuda(no_env, False)
    no_env.setenv(SCALE_ENV, "")
    assert resolve_scale() == "small"


@pytest.mark.parametrize(("raw", "expected"), [
    ("SMOKE", "smoke"), ("  small ", "small"), ("Full\n", "full"), ("\tSmOkE", "smoke"),
])
def test_case_and_whitespace_tolerated_in_argument_and_env(no_env, raw, expected):
    assert resolve_scale(raw) == expected
    no_env.setenv(SCALE_ENV, raw)
    assert resolve_scale() == expected


def test_bad_scale_argument_raises_scale_error_naming_argument(no_env):
    no_env.setenv(SCALE_ENV, "smoke")  # a valid env var must not hide the bad argument
    with pytest.raises(ScaleError) as info:
        resolve_scale("huge")
    message = str(info.value)
    for name in SCALES:
        assert name in message
    assert "'huge'" in message
    assert "argument" in message
    assert SCALE_ENV not in message


def test_bad_scale_env_var_raises_scale_error_naming_env_var(no_env):
    no_env.setenv(SCALE_ENV, "fast")
    with pytest.raises(ScaleError) as info:
        setup(quiet=True)
    message = str(info.value)
    for name in SCALES:
        assert name in message
    assert "'fast'" in message
    assert SCALE_ENV in message


def test_scale_error_is_a_value_error():
    assert issubclass(ScaleError, ValueError)
    with pytest.raises(ValueError):
        resolve_scale("tiny")


def test_scales_constant():
    assert SCALES == ("smoke", "small", "full")


# --- cfg.pick -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("scale", "expected"), [("smoke", 2), ("small", 10), ("full", 30)])
def test_pick_returns_value_for_scale(scale, expected):
    cfg = setup(seed=0, scale=scale, quiet=True)
    assert cfg.pick(smoke=2, small=10, full=30) == expected
    assert cfg.pick(smoke="a", small="b", full="c") == "abc"[SCALES.index(scale)]
    assert cfg.smoke is (scale == "smoke")


@pytest.mark.parametrize(("raw", "expected"), [
    (None, False), ("", False), ("0", False), ("no", False), ("1", True), ("true", True), (" YES ", True),
])
def test_offline_knob(monkeypatch, raw, expected):
    if raw is None:
        monkeypatch.delenv(config.OFFLINE_ENV, raising=False)
    else:
        monkeypatch.setenv(config.OFFLINE_ENV, raw)
    assert setup(seed=0, scale="full", quiet=True).offline is expected


def test_pick_takes_keywords_only():
    cfg = Config(seed=0, scale="small", device=torch.device("cpu"))
    with pytest.raises(TypeError):
        cfg.pick(1, 2, 3)  # type: ignore[misc]


def test_pick_returns_the_object_itself():
    big, small = [1, 2, 3], [1]
    cfg = Config(seed=0, scale="full", device=torch.device("cpu"))
    assert cfg.pick(smoke=small, small=small, full=big) is big


# --- report and device --------------------------------------------------------------------------------------

def test_environment_report_fields():
    report = config.environment_report("smoke", torch.device("cpu"))
    assert f"torch {torch.__version__}" in report
    assert "device cpu" in report
    assert "scale smoke" in report
    assert f"threads {torch.get_num_threads()}" in report
    assert "\n" not in report


def test_setup_prints_one_line_report(no_env, capsys):
    _cuda(no_env, False)  # the CPU here; on the GPU runner too, so the line says "device cpu" everywhere
    if getattr(torch.backends, "mps", None) is not None:
        no_env.setattr(torch.backends.mps, "is_available", lambda: False)
    cfg = setup(seed=0, scale="small")
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 1, out
    line = lines[0]
    assert f"torch {torch.__version__}" in line
    assert "device cpu" in line
    assert "scale small" in line
    assert f"threads {torch.get_num_threads()}" in line
    assert out == config.environment_report(cfg.scale, cfg.device) + "\n"
    assert err == ""


def test_quiet_prints_nothing(capsys):
    setup(seed=0, scale="smoke", quiet=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ""


def test_report_threads_follow_torch(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert config.environment_report("full", torch.device("cpu")).endswith("threads 3")


def test_report_defaults_to_resolved_scale(no_env):
    _cuda(no_env, False)
    no_env.setenv(SCALE_ENV, "smoke")
    assert "scale smoke" in config.environment_report(device=torch.device("cpu"))


def test_pick_device_is_cpu_without_accelerators(monkeypatch):
    _cuda(monkeypatch, False)
    if getattr(torch.backends, "mps", None) is not None:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")


def test_pick_device_prefers_cuda(monkeypatch):
    _cuda(monkeypatch, True)
    assert pick_device() == torch.device("cuda")


def test_pick_device_here_matches_what_torch_sees():
    """On the 2-core CI machine (no GPU) this is the CPU; on the GPU runner it is CUDA."""
    device = pick_device()
    if torch.cuda.is_available():
        assert device.type == "cuda"
    elif not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        assert device == torch.device("cpu")
