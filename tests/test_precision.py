"""Precision: bf16 where the GPU has it, fp16 with a gradient scaler where not, fp32 on the CPU."""

import pytest
import torch

from gsimclr import runtime
from gsimclr.errors import UserError
from gsimclr.runtime import (autocast, backward_step, grad_scaler, resolve_precision, restore_scaler,
                             scaler_state)

CPU, GPU = torch.device("cpu"), torch.device("cuda", 0)


@pytest.fixture
def gpu_without_bf16(monkeypatch):
    monkeypatch.setattr(runtime, "bf16_supported", lambda device: device.type != "cuda")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100")


def test_auto_picks_by_device(monkeypatch, gpu_without_bf16):
    assert resolve_precision(CPU) == "fp32"
    assert resolve_precision(GPU) == "fp16"                        # V100, T4: fp16 + scaler
    monkeypatch.setattr(runtime, "bf16_supported", lambda device: True)
    assert resolve_precision(GPU) == "bf16"                        # Ampere and later


def test_forced_choices_and_honest_errors(gpu_without_bf16):
    assert resolve_precision(CPU, "fp32") == "fp32" and resolve_precision(CPU, "bf16") == "bf16"
    assert resolve_precision(GPU, "fp16") == "fp16" and resolve_precision(GPU, "fp32") == "fp32"
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        resolve_precision(CPU, "fp16")
    with pytest.raises(UserError, match="V100 has no native bf16"):
        resolve_precision(GPU, "bf16")
    with pytest.raises(UserError, match="must be one of auto, bf16, fp16, fp32"):
        resolve_precision(CPU, "fp8")


def test_emulated_bf16_does_not_count(monkeypatch):
    calls = []

    def is_bf16_supported(including_emulation=True):
        calls.append(including_emulation)
        return including_emulation  # what torch reports for a V100: only emulated bf16

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert runtime.bf16_supported(GPU) is False and calls == [False]


def test_cpu_autocast_and_disabled_scaler():
    x = torch.randn(4, 4)
    with autocast(CPU, "bf16"):
        assert (x @ x).dtype == torch.bfloat16
    with autocast(CPU, "auto"):
        assert (x @ x).dtype == torch.float32
    scaler = grad_scaler(CPU, "auto")
    assert not scaler.is_enabled() and scaler_state(scaler) is None
    net = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = net.weight.detach().clone()
    backward_step(net(x).sum(), opt, scaler)                       # a disabled scaler: a plain step
    assert not torch.equal(before, net.weight)


def test_scaler_state_round_trips_and_skips_overflow_steps():
    """With an enabled scaler (CPU here; CUDA in a run) the scale survives a checkpoint."""
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=1)
    net = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    backward_step(net(torch.ones(2, 3)).sum(), opt, scaler)        # a finite step: the scale grows
    assert scaler.get_scale() == 2.0 ** 11
    weight = net.weight.detach().clone()
    backward_step(net(torch.ones(2, 3)).sum() * float("inf"), opt, scaler)  # overflow: step skipped, backs off
    assert torch.equal(weight, net.weight) and scaler.get_scale() == 2.0 ** 10
    state = scaler_state(scaler)
    import json

    restored = torch.amp.GradScaler("cpu", growth_interval=1)
    restore_scaler(restored, json.loads(json.dumps(state)))        # through a checkpoint's JSON metadata
    assert restored.get_scale() == scaler.get_scale() and restored.state_dict() == scaler.state_dict()
