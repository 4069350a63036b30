"""The model zoo: embedded weights wired right, layer tables, offline torchvision errors, local weights,
and the seam padding that makes features yaw-equivariant on 360° frames."""

from __future__ import annotations

import pytest
import torch
import torchvision

from pipeline.cli import main as cli_main
from stages.common import InputError
from stages.dream import zoo
from stages.dream.models import SeamPad
from tests.conftest import resized

CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


def _rand_googlenet_state_dict() -> dict:
    torch.manual_seed(0)
    m = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
    return m.state_dict()


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    assert torch.hub.get_dir().startswith(str(home)), "torch.hub.get_dir() ignores TORCH_HOME"
    return home


# ------------------------------------------------------------------------------------ weights wired


@pytest.mark.slow
def test_lite0_classifies_chelsea_as_a_cat(chelsea_rgb):
    from stages.dream.ascent import to_tensor

    net = zoo.build_model("efficientnet_lite0")  # fresh: forward() must not see another test's seam state
    x = to_tensor(resized(chelsea_rgb, 224, 224), torch.device("cpu"))
    with torch.no_grad():
        logits = net(x)
    assert logits.shape == (1, 1000)
    top5 = logits[0].topk(5).indices.tolist()
    assert top5[0] in CAT_CLASSES, f"top-5 ImageNet classes {top5}: the weights are not wired right"
    # A random network would not put several cat classes on top.
    assert sum(c in CAT_CLASSES for c in top5) >= 3, top5


def test_lite0_layer_table():
    table = zoo.layer_table("efficientnet_lite0")
    names = [li.name for li in table]
    assert names == ["stem"] + [f"block{i}" for i in range(16)] + ["head"]
    info = {li.name: (li.channels, li.stride) for li in table}
    assert info["stem"] == (32, 2)
    assert info["block0"] == (16, 2)
    assert info["block3"] == (40, 8)
    assert info["block9"] == (112, 16)
    assert info["block15"] == (320, 32)
    assert info["head"] == (1280, 32)
    strides = [li.stride for li in table]
    assert strides == sorted(strides)


def test_cli_layers_lists_blocks_and_marks_default(capsys):
    assert cli_main(["layers"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line[2:].split()[0]: line for line in out[1:]}
    for i in range(16):
        assert f"block{i}" in rows, out
    default = [name for name, line in rows.items() if line.startswith("*")]
    assert default == ["block9"], out
    fields = rows["block9"][2:].split()
    assert fields == ["block9", "112", "16"]
    assert rows["block15"][2:].split() == ["block15", "320", "32"]


@pytest.mark.slow
def test_cli_layers_googlenet_needs_no_weights(capsys, empty_torch_home):
    assert cli_main(["layers", "--model", "googlenet"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line[2:].split()[0]: line for line in out[1:]}
    assert {"conv1", "inception3a", "inception4c", "inception5b"} <= set(rows), out
    assert rows["inception4c"].startswith("*"), out
    assert rows["inception4c"][2:].split() == ["inception4c", "512", "16"]
    assert not any(empty_torch_home.rglob("*.pth")), "listing layers downloaded weights"


def test_cli_layers_preset_marks_its_own_layers(capsys):
    assert cli_main(["layers", "-c", "classic_googlenet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("googlenet:")
    assert "* inception4c" in out


def test_cli_layers_unknown_model(capsys):
    assert cli_main(["layers", "--model", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown model 'nope'"), err
    assert "efficientnet_lite0" in err[0]


# ------------------------------------------------------------------------------- torchvision weights


def test_torchvision_offline_without_weights_is_one_line_input_error(empty_torch_home):
    with pytest.raises(InputError) as ei:
        zoo.build_model("googlenet")
    msg = str(ei.value)
    assert "\n" not in msg
    assert "model.weights" in msg
    assert str(empty_torch_home) in msg  # says where the file would be looked for


@pytest.mark.slow
def test_torchvision_local_state_dict_loads(tmp_path):
    sd = _rand_googlenet_state_dict()
    path = tmp_path / "googlenet_random.pth"
    torch.save(sd, path)
    net = zoo.build_model("googlenet", weights=path)
    assert torch.equal(net.fc.weight, sd["fc.weight"])
    assert all(not p.requires_grad for p in net.parameters())
    # The folded, seam-wrapped network computes what torchvision's own modules with these weights compute.
    import torchvision.models as tv

    full, stages = zoo._TORCHVISION["googlenet"][0](tv)
    full.load_state_dict(sd, strict=False)
    full.eval()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        f = net.features(x, ["inception4c"])["inception4c"]
        h = (x - net.mean) / net.std
        for name, stage in stages:
            h = stage(h)
            if name == "inception4c":
                break
    assert f.shape == (1, 512, 4, 4)
    assert torch.allclose(f, h, rtol=1e-4, atol=1e-4 * h.abs().max().item())


@pytest.mark.slow
def test_wrapped_checkpoint_and_module_prefix_load(tmp_path):
    """Checkpoints saved as {'state_dict': ...} with DataParallel's 'module.' prefix load too."""
    sd = _rand_googlenet_state_dict()
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, path)
    net = zoo.build_model("googlenet", weights=path)
    assert torch.equal(net.fc.weight, sd["fc.weight"])


@pytest.mark.parametrize("case", ["garbage", "text", "missing", "other_model", "wrong_shape", "not_a_dict",
                                  "googlenet_into_lite0"])
@pytest.mark.slow
def test_bad_weights_file_is_input_error(tmp_path, case):
    path = tmp_path / "w.pth"
    name = "googlenet"
    if case == "garbage":
        path.write_bytes(bytes(range(256)) * 8)
    elif case == "text":
        path.write_text("these are not weights\n")
    elif case == "missing":
        path = tmp_path / "nope.pth"
    elif case == "other_model":
        torch.save({"foo.weight": torch.zeros(3)}, path)
    elif case == "wrong_shape":
        sd = _rand_googlenet_state_dict()
        sd["fc.weight"] = torch.zeros(10, 1024)
        torch.save(sd, path)
    elif case == "not_a_dict":
        torch.save([torch.zeros(3)], path)
    elif case == "googlenet_into_lite0":
        torch.save(_rand_googlenet_state_dict(), path)
        name = "efficientnet_lite0"
    with pytest.raises(InputError) as ei:
        zoo.build_model(name, weights=path)
    msg = str(ei.value)
    assert msg.startswith("model.weights"), msg
    assert "\n" not in msg


def test_unknown_model_name():
    with pytest.raises(InputError, match="unknown model 'nope'; choose one of: efficientnet_lite0"):
        zoo.build_model("nope")


# --------------------------------------------------------------------------------------- seam padding


def test_seamify_wraps_every_padded_conv(lite0, chelsea_tensor):
    seams = [m for m in lite0.modules() if isinstance(m, SeamPad)]
    # stem + 16 depthwise convs; nothing padded is left unwrapped
    assert len(seams) == 17
    inner = {id(m.inner) for m in seams}
    for m in lite0.modules():
        if isinstance(m, torch.nn.Conv2d) and id(m) not in inner:
            assert tuple(m.padding) == (0, 0)
    # The wrap only ever swaps horizontal padding for columns from the other side.
    with torch.no_grad():
        lite0.features(chelsea_tensor(64, 32), ["block15"], wrap_x=True)
        assert all(tuple(m.inner.padding)[1] == 0 for m in seams)
        lite0.features(chelsea_tensor(64, 32), ["block15"], wrap_x=False)
        assert all(tuple(m.inner.padding)[1] == m.pad_w for m in seams)


def test_batch_norms_are_folded_into_the_convolutions(lite0):
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in lite0.modules())
    assert sum(1 for m in lite0.modules() if isinstance(m, torch.nn.Conv2d)) == 1 + 16 * 2 + 15 + 1


@pytest.mark.parametrize("layer, stride", [("stem", 2), ("block3", 8), ("block9", 16), ("block15", 32)])
def test_wrap_x_features_are_yaw_equivariant(lite0, chelsea_tensor, layer, stride):
    x = chelsea_tensor(128, 64)
    k = 32  # a multiple of every layer's stride
    with torch.no_grad():
        f = lite0.features(x, [layer], wrap_x=True)[layer]
        f_rolled = lite0.features(torch.roll(x, k, 3), [layer], wrap_x=True)[layer]
        g = lite0.features(x, [layer], wrap_x=False)[layer]
        g_rolled = lite0.features(torch.roll(x, k, 3), [layer], wrap_x=False)[layer]
    assert f.shape[-1] == 128 // stride
    expect = torch.roll(f, k // stride, 3)
    scale = f.abs().max().item()
    err = (f_rolled - expect).abs().max().item()
    assert err <= 1e-4 * scale, f"wrap_x=True: roll by {k}px changed {layer} by {err:.3g} (scale {scale:.3g})"
    # Zero padding is not equivariant: the difference sits at the image edges.
    g_expect = torch.roll(g, k // stride, 3)
    edge_err = max((g_rolled - g_expect)[..., 0].abs().max().item(),
                   (g_rolled - g_expect)[..., -1].abs().max().item())
    assert edge_err > 1e-2 * scale, f"wrap_x=False should differ at the edges ({edge_err:.3g})"


def test_wrap_x_keeps_vertical_padding_zero(lite0, chelsea_tensor):
    """Only columns wrap: rolling vertically must not be a symmetry (the poles are not glued together)."""
    x = chelsea_tensor(128, 64)
    with torch.no_grad():
        f = lite0.features(x, ["block3"], wrap_x=True)["block3"]
        f_rolled = lite0.features(torch.roll(x, 32, 2), ["block3"], wrap_x=True)["block3"]
    diff = (f_rolled - torch.roll(f, 4, 2)).abs()
    assert diff[..., 0, :].max() > 1e-2 * f.abs().max()


def test_wrap_x_only_changes_columns_near_the_edges(lite0, chelsea_tensor):
    """Wrapping only changes what the edges see: columns far from both edges are unaffected."""
    x = chelsea_tensor(256, 64)
    with torch.no_grad():
        a = lite0.features(x, ["block3"], wrap_x=True)["block3"]
        b = lite0.features(x, ["block3"], wrap_x=False)["block3"]
    mid = slice(12, 20)  # block3 is 32 columns wide; its receptive field is < 8 columns on each side
    assert torch.allclose(a[..., mid], b[..., mid], atol=1e-5 * a.abs().max().item())
    assert not torch.allclose(a[..., :1], b[..., :1], atol=1e-2 * a.abs().max().item())


@pytest.mark.slow
def test_forward_logits_do_not_depend_on_a_previous_wrap_x_call(chelsea_rgb):
    from stages.dream.ascent import to_tensor

    net = zoo.build_model("efficientnet_lite0")
    x = to_tensor(resized(chelsea_rgb, 224, 224), torch.device("cpu"))
    with torch.no_grad():
        before = net(x)
        net.features(x[..., :64, :64], ["stem"], wrap_x=True)
        after = net(x)
    assert torch.allclose(before, after, atol=1e-5), (before - after).abs().max().item()
