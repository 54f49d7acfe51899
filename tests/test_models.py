import torch

from brevitas_models.config import ModelSection
from brevitas_models.export import check_narrow_range
from brevitas_models.models import build_model
from brevitas_models.tasks import get_task

TASKS = [get_task(n) for n in ("pneumoniamnist", "breastmnist", "bloodmnist")]


def test_one_output_tensor_with_all_task_slices():
    m = build_model(ModelSection(arch="mlp", hidden=[32]), TASKS, 28)
    y = m(torch.randint(0, 256, (5, 1, 28, 28)).float())
    assert y.shape == (5, 12)
    assert [t["slice"] for t in m.tasks_meta] == [[0, 2], [2, 4], [4, 12]]
    assert m.tasks_meta[1]["negative_class"] == 1  # BreastMNIST: class 1 is normal+benign


def test_head_is_block_diagonal_and_stays_so_after_training():
    m = build_model(ModelSection(arch="mlp", hidden=[32], head_hidden=4), TASKS, 28)
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    for _ in range(3):
        loss = m(torch.randint(0, 256, (8, 1, 28, 28)).float()).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = m.heads.out.weight.detach()
    mask = m.heads.block_mask
    assert w[mask == 0].abs().max() == 0
    assert w[mask == 1].abs().min() >= 0 and w[mask == 1].abs().max() > 0
    # task 0's logits depend only on task 0's hidden block
    assert mask[0:2, 4:].abs().sum() == 0 and mask[4:, :8].abs().sum() == 0


def test_quantized_weights_are_narrow_range_for_every_bit_width():
    for bits in (1, 2, 4, 8):
        m = build_model(ModelSection(arch="cnn", in_channels=3, w_bits=bits, a_bits=bits),
                        TASKS, 28)
        check_narrow_range(m)  # raises if any weight hits -2^(b-1)
        q = m.backbone[0].quant_weight()
        ints = torch.round(q.value / q.scale)
        if bits == 1:
            assert set(ints.unique().tolist()) <= {-1.0, 1.0}
        else:
            assert ints.min() >= -(2 ** (bits - 1) - 1)


def test_multiclass_baseline_has_one_union_head():
    m = build_model(ModelSection(arch="mlp", hidden=[16], mode="multiclass"), TASKS, 28)
    assert m.heads.block_mask.shape[0] == 12 and len(m.heads.heads) == 1
    assert m.heads.block_mask.all()  # one head: nothing is masked


def test_float_model_has_same_topology_without_quantizers():
    m = build_model(ModelSection(arch="mlp", hidden=[16], w_bits=None, a_bits=None), TASKS, 28)
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 12)
    assert not any("quant" in n for n, _ in m.named_parameters())
