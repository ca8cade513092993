"""The 3D U-Net baseline."""

import pytest
import torch

from unetr_lib.nets import UNet3D


@pytest.mark.parametrize("channels, shape", [((8, 16), (2, 4, 16, 24, 8)), ((4, 8, 16, 32), (1, 4, 32, 16, 48))])
def test_output_has_the_input_size(channels, shape):
    model = UNet3D(4, 3, channels)
    assert model(torch.randn(shape)).shape == (shape[0], 3, *shape[2:])


def test_skip_connections_carry_fine_detail():
    """Zeroing the skip path changes the output: the decoder does use the encoder's features."""
    model = UNet3D(4, 2, (4, 8)).eval()
    x = torch.randn(1, 4, 8, 8, 8)
    normal = model(x)
    with torch.no_grad():
        model.up_convs[0][0].weight[:, 4:] = 0  # the half of the fusing conv that reads the skip
    assert not torch.allclose(normal, model(x))


def test_bad_input_is_explained():
    model = UNet3D(4, 3, (8, 16, 32))
    with pytest.raises(ValueError, match="multiple of 4"):
        model(torch.randn(1, 4, 16, 16, 18))
    with pytest.raises(ValueError, match="4 input channels"):
        model(torch.randn(1, 2, 16, 16, 16))
    with pytest.raises(ValueError, match="two or more"):
        UNet3D(4, 3, (8,))


def test_learns_a_tiny_problem():
    """A few Adam steps on one volume reduce the loss (the model trains end to end)."""
    model = UNet3D(1, 1, (4, 8))
    x = torch.randn(1, 1, 8, 8, 8)
    target = (x > 0).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(
    "args, message",
    [((0, 3), "in_channels must be a positive int, got 0"), ((4, -1), "out_channels must be a positive int"),
     ((4, 3, (8, 0)), "channels needs two or more positive ints"), ((4, 3, 8), "channels needs two or more")],
)
def test_bad_sizes_are_refused_at_construction(args, message):
    with pytest.raises(ValueError, match=message):
        UNet3D(*args)
