"""Last-hidden-layer representations of trained networks.

:func:`extract_representations` works on any :class:`torch.nn.Module`: a
forward hook on its final :class:`torch.nn.Linear` records that layer's input
(the features) and output (the logits), so that

    logits == features @ readout.weight.T + readout.bias

holds for every sample, which is exactly what the chunk analysis assumes. A
one-output network (the squared-hinge recipe) gives a readout of weight
(1, W) and bias (1,), its prediction the sign of the output
(docs/method.md#one-output-readout).
:func:`extract_run` does it for a ``redrep train`` run and writes a native
representation set.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.accuracy import readout_predictions
from ..core.device import resolve_device
from ..core.validation import RedrepError, check_int, exception_line
from ..storage import io
from ..storage.repset import NATIVE_META, RepresentationSet
from .train import (
    TrainConfig,
    build_model,
    checkpoint_path,
    initial_model,
    list_checkpoints,
    load_run_checkpoint,
    load_run_data,
    read_run_config,
)

#: Default folder of a run's representation set (of its last epoch).
REPRESENTATIONS_DIR = "representations"


def find_readout(model: nn.Module, readout: nn.Linear | None = None) -> nn.Linear:
    """The final linear layer of ``model``: ``readout`` if given, else ``model.get_classifier()``,
    else the last :class:`~torch.nn.Linear` registered in the model."""
    if readout is not None:
        if not isinstance(readout, nn.Linear):
            raise RedrepError(f"readout: expected a torch.nn.Linear, found {type(readout).__name__}")
        if not any(m is readout for m in model.modules()):
            raise RedrepError("readout: expected a layer of the model, found a Linear that is not one of its modules")
        return readout
    get = getattr(model, "get_classifier", None)
    if callable(get):
        fc = get()
        if isinstance(fc, nn.Linear):
            return fc
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise RedrepError(f"model: expected a torch.nn.Linear readout, found none in {type(model).__name__}")
    return linears[-1]


def _batches(data, batch_size: int):
    """Yield (x, y) batches from an (x, y) pair of arrays/tensors or from an iterable of (x, y) batches."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and hasattr(data[0], "shape"):
        x, y = data
        y = y if hasattr(y, "shape") else np.asarray(y)
        if x.shape[0] != y.shape[0]:
            raise RedrepError(
                f"data: expected as many labels as samples, found {x.shape[0]} samples, {y.shape[0]} labels"
            )
        for i in range(0, x.shape[0], batch_size):
            yield _tensor(x[i : i + batch_size]), _tensor(y[i : i + batch_size])
        return
    try:
        it = iter(data)
    except TypeError:
        raise RedrepError(
            f"data: expected an (x, y) pair or an iterable of (x, y) batches, found {type(data).__name__}"
        ) from None
    for item in it:
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise RedrepError(f"data: expected batches of (x, y), found {type(item).__name__}")
        yield _tensor(item[0]), _tensor(item[1])


@contextlib.contextmanager
def _full_float32():
    """Convolutions on a GPU in float32 proper, not TF32 (cuDNN's default, 10 bits of mantissa), so that the
    extracted features, the data of every later analysis, match the CPU's up to the order of the sums."""
    allow = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = allow


def _tensor(a) -> torch.Tensor:
    """``a`` as a tensor; a read-only NumPy array (a memory-mapped file, a view of one) is copied, as
    torch may not wrap memory that it must not write (it warns), and a batch is small."""
    if isinstance(a, np.ndarray) and not a.flags.writeable:
        a = np.array(a)
    return torch.as_tensor(a)


@torch.inference_mode()
@_full_float32()
def extract_features(
    model: nn.Module,
    data,
    *,
    readout: nn.Linear | None = None,
    device=None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 256,
    progress: bool = False,
    desc: str = "extract",
):
    """Run ``model`` in eval mode over ``data`` and record its readout's input and output.

    Parameters
    ----------
    model : nn.Module whose forward calls ``readout`` once per batch
    data : (x, y) arrays or tensors, x of shape (N, ...) and y of shape (N,); or an iterable of (x, y) batches
    readout : the final nn.Linear (found by :func:`find_readout` when None)
    device : where to run; None keeps the model where it is
    transform : applied to each input batch on the device (e.g. normalisation)
    batch_size : rows per forward pass when ``data`` is an (x, y) pair

    Returns
    -------
    features : float32 ndarray of shape (N, W), the readout's input
    labels : int64 ndarray of shape (N,)
    logits : float32 ndarray of shape (N, C), the readout's output
    """
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    fc = find_readout(model, readout)
    if device is not None:
        model.to(device)
    try:
        dev = next(model.parameters()).device
    except StopIteration:
        raise RedrepError("model: expected a model with parameters, found none") from None
    # inputs are cast to the readout's dtype: float64 arrays (numpy's and scikit-learn's default) meet float32 weights
    param_dtype = fc.weight.dtype
    seen: list = []

    def hook(_module, inputs, output):
        seen.append((inputs[0].detach(), output.detach()))

    was_training = model.training
    model.eval()
    handle = fc.register_forward_hook(hook)
    feats, labels, logits = [], [], []
    try:
        for xb, yb in tqdm(_batches(data, batch_size), desc=desc, leave=False, disable=not progress):
            xb = xb.to(dev)
            if transform is not None:
                xb = transform(xb)
            if xb.is_floating_point() and xb.dtype != param_dtype:
                xb = xb.to(param_dtype)
            seen.clear()
            try:
                model(xb)
            except RuntimeError as exc:
                if xb.is_floating_point():
                    raise
                raise RedrepError(
                    f"data: expected floating-point inputs (the model's weights are {param_dtype}), found {xb.dtype} "
                    f"inputs, which the model rejected ({exception_line(exc)}); convert them, or pass transform="
                ) from None
            if len(seen) != 1:
                raise RedrepError(_readout_calls_message(model, fc, len(seen), readout is None))
            f, out = seen[0]
            if f.dim() != 2 or f.shape[0] != xb.shape[0]:
                raise RedrepError(
                    f"readout: expected its input to have shape (batch, W) = ({xb.shape[0]}, W), found {tuple(f.shape)}"
                )
            feats.append(f.float().cpu())
            logits.append(out.float().cpu())
            labels.append(yb.reshape(-1).cpu().long())
    finally:
        handle.remove()
        model.train(was_training)
    if not feats:
        raise RedrepError("data: expected at least one sample, found none")
    return torch.cat(feats).numpy(), torch.cat(labels).numpy(), torch.cat(logits).numpy()


def _readout_calls_message(model: nn.Module, fc: nn.Linear, calls: int, guessed: bool) -> str:
    """Why the readout's call count is wrong, with the model's Linear modules by name to choose ``readout=`` from."""
    names = {id(m): n for n, m in model.named_modules()}
    linears = [f"{n or '(the model)'} ({m.in_features} -> {m.out_features})"
               for n, m in model.named_modules() if isinstance(m, nn.Linear)]  # fmt: skip
    listed = ", ".join(linears[-12:]) + (f" (the last 12 of {len(linears)})" if len(linears) > 12 else "")
    how = "the last nn.Linear registered in the model" if guessed else "the readout given"
    msg = (
        f"readout: expected the final Linear ({names.get(id(fc), '?')}, {how}) to be called once per forward pass, "
        f"found {calls} calls"
    )
    if calls == 0:
        msg += "; it is not the layer that makes the logits"
    return msg + f": pass readout= the layer that does (the model's Linear modules: {listed})"


def extract_representations(
    model: nn.Module,
    train,
    test,
    *,
    readout: nn.Linear | None = None,
    device=None,
    transform=None,
    batch_size: int = 256,
    meta: dict | None = None,
    progress: bool = False,
) -> RepresentationSet:
    """A representation set of ``model``: features of ``train`` and ``test`` and the readout's weight and bias.

    ``train`` and ``test`` are (x, y) pairs or iterables of (x, y) batches
    (a DataLoader without shuffling, say); see :func:`extract_features`. The
    set's meta gets ``train_accuracy`` and ``test_accuracy`` of the readout's
    own logits (with one output: class 1 where it is > 0), plus ``meta``.
    """
    fc = find_readout(model, readout)
    # readout as given (None: found again), so that an error can say whether it was guessed
    kw = dict(readout=readout, device=device, transform=transform, batch_size=batch_size, progress=progress)
    ftr, ytr, ltr = extract_features(model, train, desc="train set", **kw)
    fte, yte, lte = extract_features(model, test, desc="test set", **kw)
    m = dict(meta or {})
    m["width"] = int(ftr.shape[1])
    m["train_accuracy"] = float(np.mean(readout_predictions(ltr) == ytr))
    m["test_accuracy"] = float(np.mean(readout_predictions(lte) == yte))
    weight = fc.weight.detach().float().cpu().numpy()
    bias = fc.bias.detach().float().cpu().numpy() if fc.bias is not None else np.zeros(weight.shape[0], np.float32)
    return RepresentationSet.from_arrays(ftr, fte, ytr, yte, weight, bias, meta=m)


def load_run_model(run_dir, epoch: int | None = None):
    """The config, checkpoint and model (on the CPU, eval mode) of a run at ``epoch`` (None: its last epoch)."""
    run_dir = Path(run_dir)
    run_config = read_run_config(run_dir)  # a clear error when run_dir is not a run
    if epoch is None:
        path = checkpoint_path(run_dir)
    else:
        epoch = check_int(epoch, "epoch", min_value=0)  # 0: the network at initialization
        path = checkpoint_path(run_dir, epoch)
        if not path.is_file():
            last = checkpoint_path(run_dir)
            kept = sorted(list_checkpoints(run_dir))
            last_epoch = load_run_checkpoint(last, run_config)["epoch"] if last.is_file() else None
            if last_epoch == epoch:
                path = last
            else:
                have = ", ".join(map(str, kept)) or "none"
                raise RedrepError(
                    f"{run_dir}: no checkpoint of epoch {epoch} (expected one of the kept epochs: {have}; "
                    f"last finished epoch: {last_epoch})"
                )
    if not path.is_file():
        raise RedrepError(f"{run_dir}: no checkpoint yet (expected {path}; has the run finished an epoch?)")
    ckpt = load_run_checkpoint(path, run_config)
    if epoch is not None and ckpt["epoch"] != epoch:
        raise RedrepError(f"{path}: expected the checkpoint of epoch {epoch}, found epoch {ckpt['epoch']}")
    config, model = model_of_checkpoint(ckpt, str(path))
    return config, ckpt, model


def model_of_checkpoint(ckpt: dict, where: str, *, weights: bool = True):
    """The validated config and the model (on the CPU, eval mode) that a checkpoint describes.

    ``ckpt`` is one that :func:`redrep.nets.train.check_checkpoint` passed.
    With ``weights`` False the checkpoint's weights are not loaded: the model
    is the one `redrep train` starts from, built after seeding everything
    with the run's seed, as it does.
    """
    config = TrainConfig.from_dict(ckpt["config"], where=where).validated()
    info = ckpt["model_info"]
    if weights:
        model = build_model(config, info["num_classes"], info["in_shape"])
        model.load_state_dict(ckpt["model"])
    else:
        model = initial_model(config, info["num_classes"], info["in_shape"])
    model.eval()
    return config, model


def extract_run(
    run_dir,
    *,
    epoch: int | None = None,
    out=None,
    device: str = "auto",
    data_dir=None,
    batch_size: int = 256,
    progress: bool = True,
) -> tuple[Path, RepresentationSet]:
    """Extract the representation set of a ``redrep train`` run and save it (native layout).

    Parameters
    ----------
    run_dir : the run directory
    epoch : a kept checkpoint's epoch; None for the last finished epoch
    out : set folder; default ``run_dir/representations`` (``representations_epoch_NNNN`` for an
          epoch other than the last)
    device : 'auto', 'cpu', 'cuda'
    data_dir : where the dataset is, if it moved since training

    Returns
    -------
    (path of the set, the set)
    """
    run_dir = Path(run_dir)
    config, ckpt, model = load_run_model(run_dir, epoch)
    ep = int(ckpt["epoch"])
    if out is None:
        last_path = checkpoint_path(run_dir)
        last_epoch = ep
        if epoch is not None and last_path.is_file():
            last_epoch = load_run_checkpoint(last_path, config)["epoch"]
        out = run_dir / (REPRESENTATIONS_DIR if ep == last_epoch else f"{REPRESENTATIONS_DIR}_epoch_{ep:04d}")
    out = Path(out)
    dev = resolve_device(device)
    with io.folder_lock(out, what="extract"):
        carried = _check_output(out, run_dir, ep)
        dataset = load_run_data(config, data_dir)
        meta = {
            "dataset": config.dataset,
            "arch": config.arch,
            "widening_factor": config.widening_factor,
            "depth": config.depth,
            "epoch": ep,
            "epochs": config.epochs,
            "seed": config.seed,
            "weight_decay": config.weight_decay,
            "label_smoothing": config.label_smoothing,
            "loss": config.loss,
            "optimizer": config.optimizer,
            "init": config.init,
            "lr": config.lr,
            "batch_size": config.batch_size,
            "train_subset": config.train_subset,
            "run_dir": str(run_dir.resolve()),
        }
        rs = extract_representations(
            model,
            (dataset.x_train, dataset.y_train),
            (dataset.x_test, dataset.y_test),
            device=dev,
            transform=dataset.prepare,
            batch_size=batch_size,
            meta=meta,
            progress=progress,
        )
        rs.meta.update(carried.get("meta", {}))
        if carried.get("error_inf") is not None:
            rs.error_inf = carried["error_inf"]
        rs.save(out)
        return out, rs


def _check_output(out: Path, run_dir: Path, epoch: int) -> dict:
    """Refuse to replace a folder that is not a representation set; return the ensemble result to keep.

    Re-extracting into a set of the same run and epoch keeps its error_inf
    (set by ``redrep ensemble``), which does not depend on the extraction.
    """
    if not out.exists():
        return {}
    if not out.is_dir():
        raise RedrepError(f"{out}: expected a folder for the representation set, found a file")
    meta_file = out / NATIVE_META
    if not meta_file.is_file():
        if any(out.iterdir()):
            raise RedrepError(
                f"{out}: expected a new folder or a representation set to replace, found other files "
                f"(no {NATIVE_META}); choose another out folder"
            )
        return {}
    try:
        doc = io.read_json_object(meta_file)
    except RedrepError:  # a damaged set is replaced; it has nothing to carry over
        return {}
    meta = doc.get("meta", {})
    meta = meta if isinstance(meta, dict) else {}
    if meta.get("run_dir") == str(run_dir.resolve()) and meta.get("epoch") == epoch and "ensemble" in meta:
        return {"error_inf": doc.get("error_inf"), "meta": {"ensemble": meta["ensemble"]}}
    return {}
