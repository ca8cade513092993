"""The ViT pieces equal their definitions and PyTorch's own modules."""

import pytest
import torch
from torch import nn

from unetr_lib.nets import UNETR, MultiHeadSelfAttention, PatchEmbedding, TransformerBlock, ViT


def test_patch_embedding_conv_equals_flatten_times_E():
    embed = PatchEmbedding(in_channels=4, img_size=(32, 48, 16), patch_size=16, hidden_size=24).eval()
    x = torch.randn(2, 4, 32, 48, 16)
    assert embed(x).shape == (2, 2 * 3 * 1, 24)
    torch.testing.assert_close(embed(x), embed.embed_by_flatten(x), rtol=0, atol=1e-5)


def test_patchify_rows_are_the_patches():
    embed = PatchEmbedding(in_channels=2, img_size=8, patch_size=4, hidden_size=8)
    x = torch.arange(2 * 8 * 8 * 8, dtype=torch.float32).reshape(1, 2, 8, 8, 8)
    x_v = embed.patchify(x)  # (1, 8, 2 * 64)
    # token 1 is the patch at grid position (h, w, d) = (0, 0, 1): voxels [0:4, 0:4, 4:8]
    torch.testing.assert_close(x_v[0, 1], x[0, :, 0:4, 0:4, 4:8].reshape(-1))
    torch.testing.assert_close(embed.unpatchify(x_v), x)


def test_unetr_shape_table_of_the_paper():
    """Seed 004's table: 128³x4 -> 512x16384 -> 512x768 -> 8x8x8x768."""
    model = UNETR(in_channels=4, out_channels=3, img_size=128)
    x = torch.randn(1, 4, 128, 128, 128)
    embedding = model.vit.patch_embedding
    assert embedding.patchify(x).shape == (1, 512, 16 * 16 * 16 * 4)  # N x P³C
    assert embedding.E.shape == (16384, 768)
    z0 = embedding(x)
    assert z0.shape == (1, 512, 768)  # N x K
    assert model.tokens_to_volume(z0).shape == (1, 768, 8, 8, 8)  # K x H/P x W/P x D/P


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_attention_explicit_equals_sdpa_equals_torch_multihead(qkv_bias):
    K, n = 32, 4
    ours = MultiHeadSelfAttention(K, n, qkv_bias=qkv_bias).eval()
    by_formula = MultiHeadSelfAttention(K, n, qkv_bias=qkv_bias, attention="explicit").eval()
    by_formula.load_state_dict(ours.state_dict())
    assert ours.attention == "sdpa" and by_formula.attention == "explicit"
    torch_mha = nn.MultiheadAttention(K, n, bias=True, batch_first=True).eval()
    with torch.no_grad():
        torch_mha.in_proj_weight.copy_(ours.qkv.weight)
        torch_mha.in_proj_bias.copy_(ours.qkv.bias if qkv_bias else torch.zeros(3 * K))
        torch_mha.out_proj.weight.copy_(ours.W_msa.weight)
        torch_mha.out_proj.bias.copy_(ours.W_msa.bias)
    z = torch.randn(3, 10, K)
    fast = ours(z)
    explicit = by_formula(z)
    reference, _ = torch_mha(z, z, z, need_weights=False)
    torch.testing.assert_close(fast, explicit, rtol=0, atol=1e-5)
    torch.testing.assert_close(explicit, reference, rtol=0, atol=1e-5)


def test_attention_map_rows_sum_to_one_and_match_torch():
    K, n = 16, 2
    ours = MultiHeadSelfAttention(K, n, qkv_bias=True).eval()
    torch_mha = nn.MultiheadAttention(K, n, batch_first=True).eval()
    with torch.no_grad():
        torch_mha.in_proj_weight.copy_(ours.qkv.weight)
        torch_mha.in_proj_bias.copy_(ours.qkv.bias)
    z = torch.randn(2, 7, K)
    A = ours.attention_map(z)
    assert A.shape == (2, n, 7, 7)
    torch.testing.assert_close(A.sum(-1), torch.ones(2, n, 7))
    _, weights = torch_mha(z, z, z, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(A, weights, rtol=0, atol=1e-6)


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
def test_dropout_only_in_training(attention):
    attn = MultiHeadSelfAttention(16, 2, dropout_rate=0.5, attention=attention)
    z = torch.randn(2, 9, 16)
    attn.eval()
    torch.testing.assert_close(attn(z), attn(z))
    attn.train()
    assert not torch.allclose(attn(z), attn(z))


def test_attention_rejects_heads_that_do_not_divide_K():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadSelfAttention(30, 4)


def test_transformer_block_is_pre_norm_residual():
    block = TransformerBlock(hidden_size=16, mlp_dim=32, num_heads=2).eval()
    z = torch.randn(2, 5, 16)
    z_prime = z + block.attn(block.norm1(z))
    expected = z_prime + block.mlp.linear2(nn.functional.gelu(block.mlp.linear1(block.norm2(z_prime))))
    torch.testing.assert_close(block(z), expected)


def test_vit_returns_every_hidden_state_indexed_like_the_paper():
    vit = ViT(in_channels=1, img_size=16, patch_size=8, hidden_size=16, mlp_dim=32, num_layers=4, num_heads=2).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    last, zs = vit(x)
    assert len(zs) == 5 and all(z.shape == (1, 8, 16) for z in zs)
    torch.testing.assert_close(zs[0], vit.patch_embedding(x))  # z0 is the embedding
    torch.testing.assert_close(zs[2], vit.blocks[1](zs[1]))  # z_i = block_i(z_{i-1})
    torch.testing.assert_close(last, vit.norm(zs[4]))


def test_attention_path_is_chosen_at_construction_and_passed_down():
    vit = ViT(1, 16, 8, hidden_size=16, mlp_dim=32, num_layers=3, num_heads=2, attention="explicit")
    assert [block.attn.attention for block in vit.blocks] == ["explicit"] * 3
    assert all(block.attn.attention == "sdpa" for block in ViT(1, 16, 8, hidden_size=16, num_heads=2).blocks)
    block = TransformerBlock(16, 32, 2, attention="explicit")
    assert block.attn.attention == "explicit" and not block.attn.fast
    block.attn.fast = True  # the old per-module flag still works
    assert block.attn.attention == "sdpa"
    with pytest.raises(ValueError, match="attention must be one of"):
        MultiHeadSelfAttention(16, 2, attention="flash")


def test_save_attn_keeps_the_attention_map_of_the_last_forward():
    attn = MultiHeadSelfAttention(16, 2, qkv_bias=True, save_attn=True).eval()
    assert attn.attention == "explicit"  # the only path that forms the map
    z = torch.randn(3, 7, 16)
    attn(z)
    torch.testing.assert_close(attn.att_mat, attn.attention_map(z))
    with pytest.raises(ValueError, match="save_attn=True"):
        MultiHeadSelfAttention(16, 2, save_attn=True, attention="sdpa")


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: PatchEmbedding(0, 16, 8, 16), "in_channels must be a positive int"),
        (lambda: PatchEmbedding(1, 16, 0, 16), "patch_size must be a positive int"),
        (lambda: PatchEmbedding(1, 16, 8, 0), "hidden_size must be a positive int"),
        (lambda: MultiHeadSelfAttention(16, 0), "num_heads must be a positive int"),
        (lambda: MultiHeadSelfAttention(16, 2, dropout_rate=1.0), "dropout_rate must be a number in"),
        (lambda: ViT(1, 16, 8, hidden_size=16, num_heads=2, num_layers=0), "num_layers must be a positive int"),
        (lambda: TransformerBlock(16, 0, 2), "mlp_dim must be a positive int"),
    ],
)
def test_bad_sizes_are_refused_at_construction(build, message):
    with pytest.raises(ValueError, match=message):
        build()
