"""A method written outside the library, in one file, to test that the harness takes any method: a small
conditional editor. G(x, c) = x + tanh(conv(x, c)) edits the image towards the AU vector c (normalised to
[0, 1]); an AU head reads c from an image. Training: the AU head regresses the labels; G reconstructs each
image from its own labels and must make the AU head read the partner's labels on the swapped image."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from eet_lightning.methods import register_method
from eet_lightning.methods.inference import Labels, TransferModel
from eet_lightning.methods.training import TransferMethod, adam


class Editor(nn.Module):
    def __init__(self, num_aus: int, width: int) -> None:
        super().__init__()
        self.edit = nn.Sequential(
            nn.Conv2d(3 + num_aus, width, 3, 1, 1), nn.ReLU(), nn.Conv2d(width, 3, 3, 1, 1)
        )
        self.reader = nn.Sequential(
            nn.Conv2d(3, width, 4, 4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.au_head = nn.Linear(width, num_aus)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        cmap = c[:, :, None, None].expand(-1, -1, *x.shape[2:])
        return (x + torch.tanh(self.edit(torch.cat([x, cmap], 1)))).clamp(-1, 1)

    def read(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.au_head(self.reader(x)))


class PluginMethod(TransferMethod):
    method = "plugin"
    data_hparams = ("aus", "image_size")
    required_labels = ("aus",)

    def __init__(
        self, aus: list[int], image_size: int, width: int = 8, lambda_swap: float = 1.0, lr: float = 1e-3
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = Editor(len(aus), width)

    @classmethod
    def from_data(cls, data: Any) -> dict[str, Any]:
        return {"aus": list(data.info.aus), "image_size": data.image_size}

    def _step(self, batch: dict) -> dict[str, torch.Tensor]:
        x = self.pair_inputs(batch, ("image", "aus"))
        c = x["aus"] / 5.0
        swapped_c = torch.cat(c.chunk(2)[::-1])
        out = {
            "au": F.mse_loss(self.net.read(x["image"]), c),
            "rec": (self.net(x["image"], c) - x["image"]).abs().mean(),
            "swap": F.mse_loss(self.net.read(self.net(x["image"], swapped_c)), swapped_c),
        }
        out["total"] = out["au"] + out["rec"] + self.hparams.lambda_swap * out["swap"]
        return out

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self._step(batch)
        self.log_losses("train", out, batch["a"]["image"].shape[0])
        return out["total"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.log_losses("val", self._step(batch), batch["a"]["image"].shape[0])

    @torch.no_grad()
    def log_images(self, batch: dict) -> dict[str, torch.Tensor]:
        x = self.pair_inputs(batch, ("image", "aus"))
        c = torch.cat((x["aus"] / 5.0).chunk(2)[::-1])
        return {"input": x["image"], "swapped": self.net(x["image"], c)}

    def configure_optimizers(self) -> Any:
        return adam(self.parameters(), self.hparams.lr, (0.9, 0.999))


class PluginModel(TransferModel):
    method = "plugin"
    parts = ("net",)
    condition_labels = ("aus",)

    def __init__(self, aus: list[int], image_size: int, width: int) -> None:
        super().__init__()
        self.aus, self.image_size = list(aus), int(image_size)
        self.net = Editor(len(aus), width)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], map_location: Any = None, **options: Any) -> PluginModel:
        hp = ckpt["hyper_parameters"]
        model = cls(hp["aus"], hp["image_size"], hp["width"])
        model._load_parts(ckpt, map_location)
        return model

    def _transfer_tensors(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        aus: Any,
        strength: float,
        la: Labels | None,
        lb: Labels | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ca = la["aus"] / 5.0 if la else self.net.read(a)
        cb = lb["aus"] / 5.0 if lb else self.net.read(b)
        return self.net(a, ca + strength * (cb - ca)), self.net(b, cb + strength * (ca - cb))

    def _reconstruct_tensors(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.net.read(x))

    def _predict_aus_tensors(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.read(x) * 5.0


register_method("plugin", "plugin_method:PluginModel")
