import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from redrep.cli import main
from redrep.core.validation import RedrepError
from redrep.nets.extract import extract_features, extract_representations, extract_run, find_readout
from redrep.nets.models import MODELS, create_model
from redrep.nets.train import TrainConfig, load_checkpoint, train
from redrep.storage.repset import RepresentationSet

ARCH_OPTS = {
    "wide_resnet16": {"widening_factor": 0.5},
    "wide_resnet22": {"widening_factor": 0.25},
    "wide_resnet28": {"widening_factor": 0.25},
    "wide_resnet40": {"widening_factor": 0.25},
    "densenet40": {"widening_factor": 0.5},
    "mlp": {"width": 24, "depth": 2},
}


def _warm_batchnorm(model, x):
    # a few train-mode passes so that eval mode uses non-trivial running statistics
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)


@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize("seed", [0, 1])
def test_features_reproduce_logits_through_the_readout(arch, seed):
    assert set(ARCH_OPTS) == set(MODELS)
    torch.manual_seed(seed)
    model = create_model(arch, 7, (3, 16, 16), **ARCH_OPTS[arch])
    x = torch.randn(20, 3, 16, 16)
    y = torch.randint(0, 7, (20,))
    _warm_batchnorm(model, x)
    feats, labels, logits = extract_features(model, (x, y), batch_size=8)
    fc = model.get_classifier()
    assert feats.shape == (20, model.num_features) and feats.dtype == np.float32
    np.testing.assert_array_equal(labels, y.numpy())
    w, b = fc.weight.detach().numpy(), fc.bias.detach().numpy()
    np.testing.assert_allclose(logits, feats @ w.T + b, atol=1e-4, rtol=0)
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(x).numpy(), atol=1e-5)
        np.testing.assert_allclose(feats, model.forward_features(x).numpy(), atol=1e-5)


def test_mode_is_restored_and_eval_mode_is_used():
    torch.manual_seed(0)
    model = create_model("wide_resnet16", 3, (3, 8, 8), widening_factor=0.25)
    x = torch.randn(6, 3, 8, 8)
    _warm_batchnorm(model, x)
    model.train()
    f1, _, _ = extract_features(model, (x, torch.zeros(6, dtype=torch.long)))
    assert model.training
    # eval mode: a sample's features do not depend on the rest of its batch
    f2, _, _ = extract_features(model, (x[:1], torch.zeros(1, dtype=torch.long)))
    np.testing.assert_allclose(f1[:1], f2, atol=1e-5)


class FlagNet(nn.Module):
    """Notes cuDNN's TF32 switch at each forward pass."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.tf32 = []

    def forward(self, x):
        self.tf32.append(torch.backends.cudnn.allow_tf32)
        return self.fc(x)


def test_read_only_arrays_and_full_float32(monkeypatch):
    # a memory-mapped set is read-only: extraction takes it without torch's warning (an error in the tests)
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    y = np.arange(10) % 3
    model = FlagNet()
    expected = extract_features(model, (x, y), batch_size=4)
    x.flags.writeable = False
    y.flags.writeable = False
    got = extract_features(model, (x, y), batch_size=4)
    got_batches = extract_features(model, [(x[:6], y[:6]), (x[6:], y[6:])])
    for a, b, c in zip(expected, got, got_batches):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    # convolutions in float32 proper during extraction (no TF32 on a GPU), the switch restored afterwards
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    model.tf32.clear()
    extract_features(model, (x, y), batch_size=4)
    assert model.tf32 == [False] * 3 and torch.backends.cudnn.allow_tf32 is True


class UserNet(nn.Module):
    """A user's model with no redrep interface: the readout is found as the last Linear."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 9), nn.Tanh())
        self.head = nn.Linear(9, 3)

    def forward(self, x):
        return self.head(self.body(x)) * 1.0


def test_user_module_with_a_dataloader():
    torch.manual_seed(0)
    model = UserNet()
    x, y = torch.randn(30, 5), torch.randint(0, 3, (30,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=7)
    rs = extract_representations(model, loader, (x[:10].numpy(), y[:10].numpy()), meta={"note": "user"})
    assert isinstance(rs, RepresentationSet) and rs.width == 9 and rs.n_train == 30 and rs.n_test == 10
    with torch.no_grad():
        h = model.body(x).numpy()
        logits = model(x).numpy()
    np.testing.assert_allclose(rs.features_train, h, atol=1e-6)
    np.testing.assert_array_equal(rs.weight, model.head.weight.detach().numpy())
    assert rs.meta["note"] == "user"
    assert rs.meta["train_accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y.numpy()))


def test_readout_errors():
    model = UserNet()
    data = (torch.randn(4, 5), torch.zeros(4, dtype=torch.long))
    assert find_readout(model) is model.head
    assert find_readout(model, model.body[0]) is model.body[0]
    with pytest.raises(RedrepError, match=r"readout: expected a layer of the model"):
        find_readout(model, nn.Linear(9, 3))
    with pytest.raises(RedrepError, match=r"readout: expected a torch.nn.Linear, found Tanh"):
        find_readout(model, model.body[1])
    with pytest.raises(RedrepError, match=r"model: expected a torch.nn.Linear readout, found none"):
        find_readout(nn.Sequential(nn.Tanh()))

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 5)

        def forward(self, x):
            return self.fc(self.fc(x))

    with pytest.raises(RedrepError, match=r"called once per forward pass, found 2 calls"):
        extract_features(Twice(), data)
    with pytest.raises(RedrepError, match=r"data: expected as many labels as samples"):
        extract_features(model, (torch.randn(4, 5), torch.zeros(3)))


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "mlp"
    cfg = TrainConfig(
        dataset="synthetic", arch="mlp", width=16, depth=2, epochs=3, batch_size=64, lr=0.05, device="cpu"
    )
    res = train(cfg, run, progress=False)
    return run, res


def test_extract_run_writes_a_set_that_agrees_with_training_metrics(mlp_run):
    run, res = mlp_run
    path, rs = extract_run(run, device="cpu", progress=False)
    assert path == run / "representations"
    back = RepresentationSet.load(path)
    m = back.meta
    assert (m["dataset"], m["arch"], m["width"], m["epoch"], m["seed"], m["depth"]) == ("synthetic", "mlp", 16, 3, 0, 2)
    final = res.history[-1]
    assert m["train_accuracy"] == pytest.approx(final["train_eval_acc"])
    assert m["test_accuracy"] == pytest.approx(final["test_acc"])
    logits = np.asarray(back.features_test) @ back.weight.T + back.bias
    assert np.mean(logits.argmax(1) == back.labels_test) == pytest.approx(final["test_acc"])


def test_extract_an_earlier_epoch_and_errors(mlp_run, tmp_path):
    run, _ = mlp_run
    path, rs = extract_run(run, epoch=2, device="cpu", progress=False)
    assert path == run / "representations_epoch_0002" and rs.meta["epoch"] == 2
    path3, _ = extract_run(run, epoch=3, out=tmp_path / "e3", device="cpu", progress=False)  # the last epoch by number
    assert json.loads((path3 / "meta.json").read_text())["meta"]["epoch"] == 3
    with pytest.raises(RedrepError, match=r"no checkpoint of epoch 4 \(expected one of the kept epochs: 0, 1, 2, 3"):
        extract_run(run, epoch=4, device="cpu", progress=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("keep")
    with pytest.raises(RedrepError, match=r"mine: expected a new folder or a representation set to replace"):
        extract_run(run, out=tmp_path / "mine", device="cpu", progress=False)
    assert (tmp_path / "mine" / "a.txt").read_text() == "keep"
    with pytest.raises(RedrepError, match=r"expected a run directory holding config.json"):
        extract_run(tmp_path, device="cpu", progress=False)


def test_extract_epoch_0_is_the_network_at_initialization(mlp_run):
    run, _ = mlp_run
    r = CliRunner().invoke(main, ["extract", str(run), "--epoch", "0", "--device", "cpu", "-q"])
    assert r.exit_code == 0, r.output
    rs = RepresentationSet.load(run / "representations_epoch_0000")
    assert rs.meta["epoch"] == 0
    ck = load_checkpoint(run / "checkpoints" / "epoch_0000.pt")
    np.testing.assert_array_equal(rs.weight, ck["model"]["fc.weight"].numpy())
    logits = np.asarray(rs.features_test) @ rs.weight.T + rs.bias
    assert np.mean(logits.argmax(1) == rs.labels_test) == pytest.approx(rs.meta["test_accuracy"])
    r = CliRunner().invoke(main, ["extract", "--device", "cpu", str(run), "--epoch", "-1", "-q"])
    assert r.exit_code == 2 and "epoch: expected an integer >= 0, found -1" in r.output


class ProjectionHeadNet(nn.Module):
    """A classifier whose last registered Linear is a projection head that forward() does not call."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 9), nn.ReLU())
        self.fc = nn.Linear(9, 3)
        self.proj = nn.Linear(9, 4)  # used by a contrastive loss during training, not by forward()

    def forward(self, x):
        return self.fc(self.body(x))


def test_float64_numpy_inputs_are_cast_to_the_model_dtype_cpu():
    """scikit-learn's float64 arrays meet float32 weights: the features equal those of the float32 inputs."""
    torch.manual_seed(0)
    model = UserNet()
    rng = np.random.default_rng(0)
    x64, y = rng.normal(size=(25, 5)), rng.integers(0, 3, size=25)
    rs = extract_representations(model, (x64, y), (x64[:7], y[:7]), device="cpu")
    with torch.no_grad():
        h = model.body(torch.as_tensor(x64, dtype=torch.float32)).numpy()
    assert rs.features_train.dtype == np.float32
    np.testing.assert_array_equal(rs.features_train, h)
    # and a float64 model gets float64 inputs (float32 arrays are cast up, not the model down)
    model64 = UserNet().double()
    feats, _, logits = extract_features(model64, (x64.astype(np.float32), y), device="cpu")
    with torch.no_grad():
        ref = model64.body(torch.as_tensor(x64.astype(np.float32), dtype=torch.float64)).float().numpy()
    np.testing.assert_allclose(feats, ref, rtol=1e-6)


def test_integer_inputs_a_model_rejects_give_one_line_cpu():
    x = np.arange(20, dtype=np.int64).reshape(4, 5)
    expected = (
        r"^data: expected floating-point inputs \(the model's weights are torch.float32\), found torch.int64 inputs, "
        r"which the model rejected .*transform="
    )
    with pytest.raises(RedrepError, match=expected):
        extract_features(UserNet(), (x, np.zeros(4, dtype=np.int64)), device="cpu")


def test_readout_not_called_names_the_linear_modules_cpu():
    model = ProjectionHeadNet()
    data = (torch.randn(6, 5), torch.zeros(6, dtype=torch.long))
    with pytest.raises(RedrepError) as err:
        extract_representations(model, data, data, device="cpu")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(
        "readout: expected the final Linear (proj, the last nn.Linear registered in the model) to be called once "
        "per forward pass, found 0 calls; it is not the layer that makes the logits: pass readout="
    )
    assert msg.endswith("(the model's Linear modules: body.0 (5 -> 9), fc (9 -> 3), proj (9 -> 4))")
    # the hint works: with readout= the classifier, the logits are reproduced
    rs = extract_representations(model, data, data, readout=model.fc, device="cpu")
    with torch.no_grad():
        np.testing.assert_allclose(rs.features_test @ rs.weight.T + rs.bias, model(data[0]).numpy(), atol=1e-6)
    with pytest.raises(RedrepError, match=r"\(proj, the readout given\) .* found 0 calls"):
        extract_features(model, data, readout=model.proj)
