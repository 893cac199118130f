"""Model files: architectures, resolve_model, load_pair's checks, real samples, save_model_dir."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from mhgan_dist.errors import ConfigError, InputError, ModelError
from mhgan_dist.models import (
    SHIPPED_MODELS,
    DCGANDiscriminator,
    DCGANGenerator,
    ModelFiles,
    build_pair,
    load_pair,
    load_real_samples,
    resolve_model,
    save_model_dir,
)

LATENT = 3
# TorchScript is deprecated in torch 2.14 but user .pt files are supported; the fixtures make some.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


class TinyG(nn.Module):
    def __init__(self, latent_dim: int = LATENT, out: int = 2, scale: float = 1.0) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.scale = scale
        self.lin = nn.Linear(latent_dim, out)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.lin(z) * self.scale


class TinyD(nn.Module):
    """``[B, in_dim]`` -> ``[B, outputs]``, optionally through a sigmoid."""

    def __init__(self, in_dim: int = 2, outputs: int = 1, sigmoid: bool = False) -> None:
        super().__init__()
        self.sigmoid = sigmoid
        self.lin = nn.Linear(in_dim, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x) * 4.0
        return torch.sigmoid(y) if self.sigmoid else y


def export(module: nn.Module, example: torch.Tensor, path: Path) -> Path:
    program = torch.export.export(module.eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(program, path)
    return path


def script(module: nn.Module, path: Path) -> Path:
    torch.jit.script(module.eval()).save(str(path))
    return path


def pair(g: Path, d: Path, **kwargs: object) -> ModelFiles:
    return resolve_model(generator=g, discriminator=d, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One of each kind of file, made once (exporting costs about a second)."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("models")
    z, x = torch.randn(2, LATENT), torch.randn(2, 2)
    out = {
        "g_pt2": export(TinyG(), z, root / "g.pt2"),
        "d_pt2": export(TinyD(), x, root / "d.pt2"),
        "d_vector_pt2": export(nn.Sequential(TinyD(), nn.Flatten(0)), x, root / "d_vector.pt2"),
        "g_ts": script(TinyG(), root / "g.pt"),
        "d_ts": script(TinyD(), root / "d.pt"),
        "d_prob_ts": script(TinyD(sigmoid=True), root / "d_prob.pt"),
        "d_wide_ts": script(TinyD(outputs=3), root / "d_wide.pt"),
        "d_5in_ts": script(TinyD(in_dim=5), root / "d_5in.pt"),
        "g_nan_ts": script(TinyG(scale=float("nan")), root / "g_nan.pt"),
        "g_plain_ts": script(nn.Sequential(nn.Linear(LATENT, 2)), root / "g_plain.pt"),
    }
    out["garbage"] = root / "garbage.pt2"
    out["garbage"].write_bytes(np.random.default_rng(0).bytes(4096))
    out["state_dict"] = root / "state_dict.pt"
    torch.save(TinyG().state_dict(), out["state_dict"])
    return out


# -------------------------------------------------------------- architectures


@pytest.mark.parametrize(
    "architecture, shape, latent",
    [
        ("mlp", (2,), 2),
        ("mlp", (1,), 2),
        ("dcgan", (1, 8, 8), 16),
        ("dcgan", (1, 28, 28), 100),
        ("dcgan", (3, 32, 32), 100),
        ("dcgan", (3, 64, 64), 100),
    ],
)
def test_architecture_shapes(architecture: str, shape: tuple[int, ...], latent: int) -> None:
    g, d = build_pair(architecture, shape, latent_dim=latent, width=8)
    x = g(torch.randn(5, latent))
    assert x.shape == (5, *shape) and x.dtype == torch.float32
    assert d(x).shape == (5,)
    if architecture == "dcgan":
        assert x.abs().max() <= 1.0  # tanh output


def test_dcgan_64_matches_the_pytorch_example() -> None:
    g, d = DCGANGenerator(100, 3, 64, 64), DCGANDiscriminator(3, 64, 64)
    # The DCGAN example's parameter counts (its D without the final sigmoid has the same weights).
    assert sum(p.numel() for p in g.parameters()) == 3_576_704
    assert sum(p.numel() for p in d.parameters()) == 2_765_568
    assert not any(isinstance(m, nn.Sigmoid) for m in d.modules())


def _multiply_adds(modules: list[nn.Module], run: object) -> int:
    """Multiply-adds of the linear and (transposed) convolution layers during ``run()``, per sample."""
    total = [0]

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        per_sample_in = inputs[0][0].numel()
        per_sample_out = output[0].numel()
        if isinstance(module, nn.Linear):
            total[0] += module.in_features * module.out_features
        elif isinstance(module, nn.ConvTranspose2d):  # every input element meets k*k weights per output channel
            total[0] += per_sample_in * module.out_channels * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, nn.Conv2d):  # every output element sums in_channels * k * k products
            total[0] += per_sample_out * module.in_channels * module.kernel_size[0] * module.kernel_size[1]

    handles = [m.register_forward_hook(hook) for net in modules for m in net.modules()]
    try:
        run()  # type: ignore[operator]
    finally:
        for h in handles:
            h.remove()
    return total[0]


def test_dcgan_28_layout_and_cost() -> None:
    from mhgan_dist.models.architectures import DCGAN28Discriminator, DCGAN28Generator

    g, d = build_pair("dcgan", (1, 28, 28), latent_dim=100)
    assert isinstance(g, DCGAN28Generator) and isinstance(d, DCGAN28Discriminator)
    g.eval(), d.eval()
    stages: list[tuple[int, ...]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: stages.append(tuple(o.shape[1:]))) for m in g.net if isinstance(m, nn.ConvTranspose2d)]
    with torch.no_grad():
        macs = _multiply_adds([g, d], lambda: d(g(torch.randn(1, 100))))
    for h in hooks:
        h.remove()
    assert stages == [(64, 14, 14), (1, 28, 28)]  # 7 -> 14 -> 28, no padding to 32
    assert g.project.out_features == 128 * 7 * 7
    # The module docstring's count: G 7,250,432 + D 6,629,504; the budget is about 15M.
    assert macs == 13_879_936
    assert sum(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in d.modules()) == 2


def test_bad_architecture_options() -> None:
    with pytest.raises(ConfigError, match="28 or a power of two"):
        build_pair("dcgan", (3, 24, 24), latent_dim=10)
    with pytest.raises(ConfigError, match="unknown architecture"):
        build_pair("resnet", (2,), latent_dim=2)
    with pytest.raises(ConfigError, match=r"flat samples"):
        build_pair("mlp", (1, 8, 8), latent_dim=2)


# --------------------------------------------------------------------- loading


def test_accepts_export_pair_and_reads_latent_dim(files: dict[str, Path]) -> None:
    loaded = load_pair(pair(files["g_pt2"], files["d_pt2"]))
    assert loaded.latent_dim == LATENT and loaded.sample_shape == (2,)
    assert loaded.device == torch.device("cpu")
    for batch in (1, 7, 1000):
        with torch.inference_mode():
            logits = loaded.discriminator(loaded.generator(torch.randn(batch, LATENT)))
        assert logits.shape == (batch,) and logits.dtype == torch.float32
    # Ordinary module calls work on the wrappers even though exported modules refuse eval().
    loaded.generator.eval().train().eval()
    assert len(loaded.fingerprint) == 64


def test_accepts_vector_output_discriminator(files: dict[str, Path]) -> None:
    loaded = load_pair(pair(files["g_pt2"], files["d_vector_pt2"]))
    assert loaded.discriminator(torch.zeros(4, 2)).shape == (4,)


def test_accepts_torchscript_pair_with_latent_dim_attribute(files: dict[str, Path]) -> None:
    loaded = load_pair(pair(files["g_ts"], files["d_ts"]))
    assert loaded.latent_dim == LATENT and loaded.sample_shape == (2,)
    assert loaded.discriminator(loaded.generator(torch.randn(1, LATENT))).shape == (1,)


def test_format_is_found_by_trying_not_by_suffix(files: dict[str, Path], tmp_path: Path) -> None:
    g = tmp_path / "generator.bin"
    g.write_bytes(files["g_pt2"].read_bytes())
    d = tmp_path / "discriminator.pt2"
    d.write_bytes(files["d_ts"].read_bytes())  # TorchScript under a .pt2 name
    assert load_pair(pair(g, d)).latent_dim == LATENT


def test_mixed_pair(files: dict[str, Path]) -> None:
    assert load_pair(pair(files["g_ts"], files["d_pt2"])).sample_shape == (2,)


def test_latent_dim_must_be_known(files: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match=r"g_plain\.pt does not declare its latent dimension.*--latent-dim"):
        load_pair(pair(files["g_plain_ts"], files["d_ts"]))
    assert load_pair(pair(files["g_plain_ts"], files["d_ts"], latent_dim=LATENT)).latent_dim == LATENT


def test_latent_dim_conflict(files: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match=rf"g\.pt2 takes latents of dimension {LATENT}, not 5"):
        load_pair(pair(files["g_pt2"], files["d_pt2"], latent_dim=5))


def test_probability_discriminator_becomes_logits(files: dict[str, Path]) -> None:
    loaded = load_pair(pair(files["g_ts"], files["d_prob_ts"], discriminator_output="probability"))
    raw = torch.jit.load(str(files["d_prob_ts"]))
    x = torch.randn(64, 2)
    with torch.inference_mode():
        p = raw(x).reshape(-1).double()
        expected = torch.log(p) - torch.log1p(-p)
        got = loaded.discriminator(x)
    assert got.dtype == torch.float32 and got.shape == (64,)
    assert torch.allclose(got.double(), expected, atol=1e-5)
    # A saturated sigmoid gives a large finite logit rather than inf.
    with torch.inference_mode():
        assert torch.isfinite(loaded.discriminator(torch.full((2, 2), 1e4))).all()
    # The probability flag changes the fingerprint: same files, other scores.
    assert loaded.fingerprint != load_pair(pair(files["g_ts"], files["d_prob_ts"])).fingerprint


def test_logit_discriminator_declared_probability_is_rejected(files: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match=r"d\.pt returned values outside \[0, 1\]"):
        load_pair(pair(files["g_ts"], files["d_ts"], discriminator_output="probability"))


@pytest.mark.parametrize(
    "g_key, d_key, pattern",
    [
        ("garbage", "d_pt2", r"generator file .*garbage\.pt2 is neither a torch\.export program \(\.pt2\) nor a TorchScript file"),
        ("g_pt2", "state_dict", r"discriminator file .*state_dict\.pt is neither a torch\.export program"),
        ("g_ts", "d_wide_ts", r"discriminator file .*d_wide\.pt returned shape \[1, 3\] for 1 samples; expected \[1\] or \[1, 1\]"),
        ("g_ts", "d_5in_ts", r"discriminator file .*d_5in\.pt failed on the generator's samples of shape \[1, 2\] \(the pair does not connect\)"),
        ("g_nan_ts", "d_ts", r"generator file .*g_nan\.pt returned non-finite values"),
    ],
)
def test_loader_rejections(files: dict[str, Path], g_key: str, d_key: str, pattern: str) -> None:
    with pytest.raises(ModelError, match=pattern) as info:
        load_pair(pair(files[g_key], files[d_key]))
    message = str(info.value)
    assert "\n" not in message and message.endswith(".")  # one sentence


def test_missing_file(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"discriminator file .*absent\.pt2 not found"):
        pair(files["g_pt2"], tmp_path / "absent.pt2")
    bogus = ModelFiles("x", files["g_pt2"], tmp_path / "gone.pt2", None, None, "logit", {})
    with pytest.raises(ModelError, match=r"discriminator file .*gone\.pt2 not found"):
        load_pair(bogus)


def test_export_with_pickled_payload_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    tampered = tmp_path / "pickled.pt2"
    with zipfile.ZipFile(files["g_pt2"]) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            blob = src.read(item)
            if item.filename.endswith("weights_config.json"):
                config = json.loads(blob)
                next(iter(config["config"].values()))["use_pickle"] = True
                blob = json.dumps(config).encode()
            dst.writestr(item, blob)
    with pytest.raises(ModelError, match=r"generator file .*pickled\.pt2 stores a pickled payload"):
        load_pair(pair(tampered, files["d_pt2"]))


def test_batch_one_works_for_export(files: dict[str, Path]) -> None:
    program = torch.export.load(files["g_pt2"])
    assert program.module()(torch.randn(1, LATENT)).shape == (1, 2)


# --------------------------------------------------------------------- resolve


def test_resolve_argument_errors(files: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="not both"):
        resolve_model("grid2d", generator=files["g_pt2"], discriminator=files["d_pt2"])
    with pytest.raises(ConfigError, match="both a generator and a discriminator"):
        resolve_model(generator=files["g_pt2"])
    with pytest.raises(ConfigError, match="both a generator and a discriminator"):
        resolve_model()
    with pytest.raises(ConfigError, match="discriminator output must be one of logit, probability"):
        resolve_model(generator=files["g_pt2"], discriminator=files["d_pt2"], discriminator_output="odds")
    with pytest.raises(ConfigError, match="latent dimension must be a positive integer"):
        resolve_model(generator=files["g_pt2"], discriminator=files["d_pt2"], latent_dim=0)
    with pytest.raises(ModelError, match=r"'no-such-model' is neither a shipped model \(grid2d, mixture1d, digits, fashion\)"):
        resolve_model("no-such-model")
    with pytest.raises(InputError, match=r"real samples file .*nope\.npy not found"):
        resolve_model(generator=files["g_pt2"], discriminator=files["d_pt2"], real="nope.npy")


def test_resolve_bare_pair(files: dict[str, Path]) -> None:
    resolved = resolve_model(generator=files["g_pt2"], discriminator=files["d_pt2"])
    assert resolved.name == "g" and resolved.real is None and resolved.latent_dim is None
    assert resolved.discriminator_output == "logit" and resolved.metadata == {}


def test_resolve_directory(files: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "generator.pt").write_bytes(files["g_ts"].read_bytes())
    with pytest.raises(ModelError, match=r"has no discriminator\.pt2 or discriminator\.pt file"):
        resolve_model(tmp_path)
    (tmp_path / "discriminator.pt2").write_bytes(files["d_pt2"].read_bytes())
    np.save(tmp_path / "real.npy", np.zeros((4, 2), np.float32))
    resolved = resolve_model(tmp_path)
    assert resolved.name == tmp_path.name and resolved.real == tmp_path / "real.npy"
    assert resolved.generator.suffix == ".pt" and resolved.discriminator.suffix == ".pt2"
    other = tmp_path / "other.npy"
    np.save(other, np.ones((3, 2), np.float32))
    assert resolve_model(tmp_path, real=other).real == other
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match=r"model\.json is not valid JSON"):
        resolve_model(tmp_path)


def test_shipped_names() -> None:
    assert SHIPPED_MODELS == ("grid2d", "mixture1d", "digits", "fashion")


# ----------------------------------------------------------------- real data


def test_real_samples_npy(tmp_path: Path) -> None:
    good = tmp_path / "real.npy"
    np.save(good, np.arange(12, dtype=np.float64).reshape(6, 2))
    x = load_real_samples(good, (2,))
    assert x.dtype == np.float32 and x.shape == (6, 2)
    with pytest.raises(InputError, match=r"real\.npy holds samples of shape \[2\], but the generator makes \[3\]"):
        load_real_samples(good, (3,))
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros(5))
    assert load_real_samples(flat, (1,)).shape == (5, 1)


def test_real_samples_refuses_pickles(tmp_path: Path) -> None:
    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match=r"objects\.npy holds pickled objects, which are refused"):
        load_real_samples(pickled)
    with pytest.raises(InputError, match=r"missing\.npy not found"):
        load_real_samples(tmp_path / "missing.npy")
    raw_pickle = tmp_path / "real.pkl"
    raw_pickle.write_bytes(pickle.dumps(np.zeros((2, 2))))
    with pytest.raises(InputError, match=r"real\.pkl is neither a \.npy array nor Parquet"):
        load_real_samples(raw_pickle)
    nan = tmp_path / "nan.npy"
    np.save(nan, np.array([[0.0, np.nan]]))
    with pytest.raises(InputError, match="non-finite"):
        load_real_samples(nan)


def test_real_samples_parquet(tmp_path: Path) -> None:
    images = np.random.default_rng(0).standard_normal((5, 1, 2, 3)).astype(np.float32)
    tensor_type = pa.fixed_shape_tensor(pa.float32(), [1, 2, 3])
    storage = pa.FixedSizeListArray.from_arrays(pa.array(images.ravel()), 6)
    pq.write_table(pa.table({"sample": pa.ExtensionArray.from_storage(tensor_type, storage)}), tmp_path / "t.parquet")
    assert np.array_equal(load_real_samples(tmp_path / "t.parquet", (1, 2, 3)), images)

    nested = [[[float(v) for v in row] for row in image[0]] for image in images]
    pq.write_table(pa.table({"sample": nested, "other": list(range(5))}), tmp_path / "n.parquet")
    assert np.array_equal(load_real_samples(tmp_path / "n.parquet", (2, 3)), images[:, 0])

    pq.write_table(pa.table({"sample": [[1.0, 2.0], [3.0]]}), tmp_path / "ragged.parquet")
    with pytest.raises(InputError, match="samples of different lengths"):
        load_real_samples(tmp_path / "ragged.parquet")
    pq.write_table(pa.table({"x": [1.0]}), tmp_path / "nocol.parquet")
    with pytest.raises(InputError, match=r"nocol\.parquet is neither a \.npy array nor Parquet with a 'sample' column"):
        load_real_samples(tmp_path / "nocol.parquet")


# ------------------------------------------------------------------------ save


def test_save_model_dir_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    g, d = build_pair("dcgan", (1, 8, 8), latent_dim=4, width=4)
    g.train()
    g(torch.randn(8, 4))  # non-trivial batch-norm statistics
    real = np.zeros((3, 1, 8, 8), np.float32)
    out = save_model_dir(tmp_path / "m", g, d, latent_dim=4, sample_shape=(1, 8, 8), real=real, metadata={"dataset": "t"})
    assert g.training  # the caller's module keeps its mode
    assert sorted(p.name for p in out.iterdir()) == ["discriminator.pt2", "generator.pt2", "model.json", "real.npy"]
    meta = json.loads((out / "model.json").read_text())
    assert meta["dataset"] == "t" and meta["latent_dim"] == 4 and meta["sample_shape"] == [1, 8, 8]
    assert meta["discriminator_output"] == "logit" and meta["versions"]["torch"] == torch.__version__

    (out / "model.json").unlink()  # the loader must then read latent_dim from the program
    loaded = load_pair(resolve_model(out))
    assert loaded.latent_dim == 4 and loaded.sample_shape == (1, 8, 8)
    z = torch.randn(5, 4)
    with torch.inference_mode():
        assert torch.allclose(loaded.generator(z), g.eval()(z), atol=1e-6)
        assert torch.allclose(loaded.generator(z[:1]), g(z[:1]), atol=1e-6)
    assert np.array_equal(load_real_samples(out / "real.npy", loaded.sample_shape), real)


def test_tampered_file_fails_hash_check(tmp_path: Path) -> None:
    g, d = build_pair("mlp", (2,), latent_dim=2, width=8)
    out = save_model_dir(tmp_path, g, d, latent_dim=2, sample_shape=(2,), real=np.zeros((2, 2), np.float32), metadata={})
    other_g, _ = build_pair("mlp", (2,), latent_dim=2, width=8)
    export(other_g, torch.randn(2, 2), out / "generator.pt2")
    with pytest.raises(ModelError, match=r"generator file .*generator\.pt2 does not match the sha256 recorded in its model\.json"):
        load_pair(resolve_model(out))


def test_save_rejects_wrong_real_shape(tmp_path: Path) -> None:
    g, d = build_pair("mlp", (2,), latent_dim=2, width=8)
    with pytest.raises(ConfigError, match="real samples have shape"):
        save_model_dir(tmp_path, g, d, latent_dim=2, sample_shape=(2,), real=np.zeros((2, 3)), metadata={})


def test_export_generator_with_image_shaped_input_is_explained(files: dict[str, Path], tmp_path: Path) -> None:
    g = export(nn.Flatten(1), torch.randn(2, 4, 1, 1), tmp_path / "g4d.pt2")
    with pytest.raises(ModelError, match=r"g4d\.pt2 takes inputs of shape \[s\d+, 4, 1, 1\]; a generator must take \[batch, latent_dim\]"):
        load_pair(pair(g, files["d_pt2"]))


# --------------------------------------------------------- compressed reals


def test_compress_real_samples_round_trip(tmp_path: Path) -> None:
    from mhgan_dist.models.artifacts import compress_real_samples

    g, d = build_pair("dcgan", (1, 28, 28), latent_dim=4, width=2)
    levels = (np.arange(5 * 784) % 256).astype(np.float32).reshape(5, 1, 28, 28)
    real = levels / np.float32(127.5) - np.float32(1.0)  # how the Fashion-MNIST loader scales
    out = save_model_dir(tmp_path / "m", g, d, latent_dim=4, sample_shape=(1, 28, 28), real=real, metadata={})
    target = compress_real_samples(out)
    assert target == out / "real.npz" and not (out / "real.npy").exists()
    files = resolve_model(out)
    assert files.real == target
    assert np.array_equal(load_real_samples(target, (1, 28, 28)), real)  # bit for bit
    meta = json.loads((out / "model.json").read_text())
    assert set(meta["files"]) == {"generator.pt2", "discriminator.pt2", "real.npz"}
    load_pair(files)  # hashes still match
    target.write_bytes(target.read_bytes()[:-10])
    with pytest.raises(ModelError, match=r"real samples file .*real\.npz does not match the sha256"):
        load_pair(resolve_model(out))


def test_compress_real_samples_refuses_lossy(tmp_path: Path) -> None:
    from mhgan_dist.models.artifacts import compress_real_samples

    g, d = build_pair("mlp", (2,), latent_dim=2, width=4)
    out = save_model_dir(tmp_path, g, d, latent_dim=2, sample_shape=(2,), real=np.full((3, 2), 0.1234, np.float32), metadata={})
    with pytest.raises(ModelError, match="not 8-bit levels"):
        compress_real_samples(out)
    assert (out / "real.npy").exists() and not (out / "real.npz").exists()


def test_real_samples_npz_checks(tmp_path: Path) -> None:
    path = tmp_path / "r.npz"
    np.savez(path, sample=np.zeros((2, 3), np.uint8))
    with pytest.raises(InputError, match="must hold the arrays 'sample' and 'value_range'"):
        load_real_samples(path)
    np.savez(path, sample=np.zeros((2, 3), np.float32), value_range=np.array([-1.0, 1.0]))
    with pytest.raises(InputError, match="float32 levels, not uint8"):
        load_real_samples(path)
    np.savez(path, sample=np.zeros((2, 3), np.uint8), value_range=np.array([1.0, -1.0]))
    with pytest.raises(InputError, match="lo < hi"):
        load_real_samples(path)
    path.write_bytes(b"garbage")
    with pytest.raises(InputError, match=r"r\.npz is not a readable \.npz archive"):
        load_real_samples(path)
    np.savez(path, sample=np.array([[0, 255]], np.uint8), value_range=np.array([0.0, 1.0]))
    assert load_real_samples(path).tolist() == [[0.0, 1.0]]


def test_real_samples_npz_refuses_pickles(tmp_path: Path) -> None:
    path = tmp_path / "p.npz"
    np.savez(path, sample=np.array([{"a": 1}], dtype=object), value_range=np.array([-1.0, 1.0]))
    with pytest.raises(InputError, match="holds pickled objects, which are refused"):
        load_real_samples(path)
