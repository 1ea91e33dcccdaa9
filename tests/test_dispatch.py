"""backend="auto": the measured choice between torch and Triton, tested on the CPU with an injected timer and runner."""

import importlib
import types
import warnings

import pytest
import torch

from hyena_vision.ops import dispatch, fftconv

fftconv_module = importlib.import_module("hyena_vision.ops.fftconv")  # the package rebinds `fftconv` to the function

KEY = dispatch.ProblemKey("FakeGPU", "causal", "bfloat16", True, 1024)


class FakeRunner:
    """``run(name)``: the call's result per backend, counting calls; ``triton`` may be wrong or raise."""

    def __init__(self, triton_error: float = 0.0, raises: Exception | None = None, dtype=torch.bfloat16):
        self.expected = torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(0)).to(dtype)
        self.triton_error, self.raises = triton_error, raises
        self.calls = {"torch": 0, "triton": 0}

    def __call__(self, name: str) -> torch.Tensor:
        self.calls[name] += 1
        self.last = name
        if name == "triton" and self.raises is not None:
            raise self.raises
        scale = self.expected.abs().max()
        return self.expected + (self.triton_error * scale if name == "triton" else 0.0)


def choose(times: dict[str, float], runner: FakeRunner, key=KEY) -> tuple[str, dispatch.AutoBackend]:
    def timer(fn) -> float:  # the injected timer: the time of whichever backend the closure ran
        fn()
        return times[runner.last]

    auto = dispatch.AutoBackend(timer=timer)
    return auto.choose(key, runner), auto


@pytest.mark.parametrize(("triton_ms", "expected"), [(1.0, "triton"), (3.0, "torch")])
def test_choice_follows_the_times(triton_ms, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a correct kernel gives no warning
        choice, auto = choose({"torch": 2.0, "triton": triton_ms}, FakeRunner(triton_error=1e-3))
    assert choice == expected
    assert "triton" in auto.reasons[KEY] and "torch" in auto.reasons[KEY]


def test_second_call_hits_the_cache():
    runner = FakeRunner()
    choice, auto = choose({"torch": 2.0, "triton": 1.0}, runner)
    calls = dict(runner.calls)
    assert auto.choose(KEY, runner) == choice == "triton"
    assert runner.calls == calls  # nothing run or timed again
    other = dispatch.ProblemKey("FakeGPU", "causal", "bfloat16", True, 2048)
    auto.choose(other, runner)
    assert runner.calls["triton"] > calls["triton"]  # another size bucket is measured on its own


@pytest.mark.parametrize(
    ("runner", "why"),
    [
        (FakeRunner(triton_error=0.1), "differs from torch's by 0.1"),
        (FakeRunner(triton_error=float("nan")), "differs from torch's by nan"),
        (FakeRunner(raises=RuntimeError("out of resources")), "RuntimeError: out of resources"),
    ],
)
def test_mismatch_or_failure_gives_torch_and_one_warning(runner, why):
    with pytest.warns(RuntimeWarning, match=why) as record:
        choice, auto = choose({"torch": 2.0, "triton": 0.1}, runner)  # even when Triton would be faster
    assert choice == "torch" and len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert auto.choose(KEY, runner) == "torch"  # cached: no second warning


@pytest.mark.parametrize(
    ("dtype", "triton_error", "expected"),
    [
        (torch.float32, 1e-5, "triton"),
        (torch.float32, 1e-3, "torch"),  # fine for bf16, too much for fp32
        (torch.bfloat16, 1e-2, "triton"),
        (torch.bfloat16, 1e-1, "torch"),
    ],
)
def test_tolerance_follows_the_dtype(dtype, triton_error, expected):
    key = dispatch.ProblemKey("FakeGPU", "causal", str(dtype).removeprefix("torch."), True, 1024)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        choice = choose({"torch": 2.0, "triton": 1.0}, FakeRunner(triton_error, dtype=dtype), key=key)[0]
    assert choice == expected and len(record) == (expected == "torch")


def test_nothing_is_timed_while_tracing(monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    runner = FakeRunner()
    choice, auto = choose({"torch": 2.0, "triton": 1.0}, runner)
    assert choice == "torch" and runner.calls == {"torch": 0, "triton": 0} and not auto.choices
    auto.choices[KEY] = "triton"  # a choice measured before tracing is kept
    assert auto.choose(KEY, runner) == "triton"


def test_problem_key_buckets():
    u = torch.randn(2, 4, 1000)
    key = dispatch.ProblemKey.of(u, "causal", gated=False)
    assert (key.kind, key.dtype, key.gated, key.size_bucket) == ("causal", "float32", False, 1024)
    assert dispatch.ProblemKey.of(torch.randn(1, 1, 1024), "causal", False).size_bucket == 1024
    assert dispatch.ProblemKey.of(torch.randn(1, 1, 1025), "causal", False).size_bucket == 2048
    assert dispatch.ProblemKey.of(torch.randn(1, 1, 32, 32, dtype=torch.bfloat16), "2d", True).size_bucket == 1024


class FakeTriton:
    """Stands in for the Triton module: records calls and says whether it supports the input."""

    def __init__(self, supported: bool = True):
        self.supported, self.calls = supported, 0

    def supports(self, u) -> bool:
        return self.supported

    def fftconv(self, u, k, D, **kwargs):
        self.calls += 1
        return fftconv(u, k, D, backend="torch", **kwargs)


@pytest.fixture
def fake_triton(monkeypatch):
    module = FakeTriton()
    monkeypatch.setattr(fftconv_module, "_triton_module", lambda: module)
    return module


@pytest.mark.parametrize(("value", "used"), [("triton", 1), ("torch", 0), ("auto", 0), ("", 0)])
def test_environment_variable_overrides_auto(monkeypatch, fake_triton, value, used):
    monkeypatch.setenv(dispatch.ENV_VAR, value)
    u, k = torch.randn(1, 2, 8), torch.randn(2, 8)
    y = fftconv(u, k, backend="auto")  # CPU tensors: "auto" alone would never pick Triton
    torch.testing.assert_close(y, fftconv(u, k, backend="torch"))
    assert fake_triton.calls == used


def test_environment_variable_is_checked(monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, "cuda")
    with pytest.raises(ValueError, match="HYENA_FFTCONV_BACKEND must be one of"):
        fftconv(torch.randn(1, 2, 8), torch.randn(2, 8))


def test_auto_on_cuda_goes_through_the_measured_choice(monkeypatch, fake_triton):
    """The dispatch path for a CUDA tensor, with a stand-in tensor, module and cache (no GPU needed)."""
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "FakeGPU")
    asked = []

    class Recorder(dispatch.AutoBackend):
        def choose(self, key, run, step=None):
            asked.append((key, step is not None))
            return self.choices.setdefault(key, "triton")

    monkeypatch.setattr(dispatch, "AUTO", Recorder())
    u = types.SimpleNamespace(is_cuda=True, shape=(2, 3, 300), dtype=torch.float16, device="cuda:0")
    k = torch.randn(3, 300)
    assert fftconv_module._use_triton("auto", u, "bidirectional", True, conv=None, tensors=(k,))
    assert asked == [(dispatch.ProblemKey("FakeGPU", "bidirectional", "float16", True, 512), False)]
    k.requires_grad_()  # a call that records gradients is measured (forward+backward) under its own key
    assert fftconv_module._use_triton("auto", u, "bidirectional", True, conv=None, tensors=(k,))
    assert asked[1] == (dispatch.ProblemKey("FakeGPU", "bidirectional", "float16", True, 512, backward=True), True)
    with torch.no_grad():  # ... but not under no_grad
        fftconv_module._use_triton("auto", u, "bidirectional", True, conv=None, tensors=(k,))
    assert asked[2] == asked[0]
    fake_triton.supported = False  # an input the kernels do not support never reaches the measurement
    assert not fftconv_module._use_triton("auto", u, "bidirectional", True, conv=None, tensors=(k,))
    assert len(asked) == 3
    monkeypatch.setattr(fftconv_module, "_triton_module", lambda: None)  # no triton: torch, no error
    assert not fftconv_module._use_triton("auto", u, "causal", False, conv=None, tensors=(k,))


def test_backward_calls_time_forward_and_backward():
    """A key with backward=True times step(name), not run(name), and says so; step is required for it."""
    runner, stepped = FakeRunner(), []

    def step(name):
        stepped.append(name)
        runner(name)

    times = {"torch": 1.0, "triton": 2.0}
    auto = dispatch.AutoBackend(timer=lambda fn: (fn(), times[runner.last])[1])
    key = dispatch.ProblemKey("FakeGPU", "causal", "bfloat16", True, 1024, backward=True)
    assert auto.choose(key, runner, step) == "torch" and stepped == ["triton", "torch"]
    assert auto.reasons[key] == "measured (forward+backward): triton 2.000 ms, torch 1.000 ms"
    with pytest.raises(ValueError, match="step is required"):
        auto.choose(dispatch.ProblemKey("FakeGPU", "2d", "bfloat16", False, 1024, backward=True), runner)


def test_training_step_leaves_the_callers_graph_alone():
    """The timed forward+backward runs on detached copies: the caller's leaves get no .grad and its graph stays
    usable."""
    x = torch.randn(2, 3, 40, requires_grad=True)
    u, k, D = x * 2, torch.randn(3, 40, requires_grad=True), torch.randn(3)  # u: inside the caller's graph

    def conv(name, u, k, D):
        conv.calls.append(name)
        return fftconv(u, k, D, backend="torch")

    conv.calls = []
    step = fftconv_module._training_step(conv, (u, k, D))
    step("torch")
    with torch.no_grad():  # as AutoBackend._measure runs it
        step("torch")
    assert conv.calls == ["torch", "torch"] and x.grad is None and k.grad is None
    fftconv(u, k, D, backend="torch").sum().backward()  # the caller's graph is intact
    assert x.grad is not None and k.grad is not None
