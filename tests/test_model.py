"""The network: shapes, ranges, the ConvLSTM state contract, the ablation, weight transfer, refinement."""
import pytest
import torch
import torch.nn.functional as F

from model import MattingBase, MattingRefine
from model.convLSTM import ConvLSTM, ConvLSTMCell
from model.decoder import Decoder
from checkpoint import CheckpointError, read_checkpoint
from model.utils import backbone_of, copy_matching_tensors, load_weights, model_settings, state_dict_of


@pytest.fixture(scope='module')
def mobilenet() -> MattingBase:
    torch.manual_seed(0)
    return MattingBase('mobilenetv2').eval()


@pytest.mark.parametrize('backbone', ['resnet50', 'resnet101', 'mobilenetv2'])
def test_shapes_and_ranges(backbone):
    torch.manual_seed(0)
    model = MattingBase(backbone).eval()
    src = torch.rand(1, 3, 3, 64, 96)
    with torch.no_grad():
        pha, fgr, err, hid, state = model(src)
    assert pha.shape == (1, 3, 1, 64, 96) and fgr.shape == (1, 3, 3, 64, 96)
    assert err.shape == (1, 3, 1, 64, 96) and hid.shape == (1, 3, 32, 64, 96)
    for image in (pha, fgr, err):
        assert image.min() >= 0 and image.max() <= 1
    assert hid.min() >= 0
    assert [tuple(h.shape) for h, _ in state] == [(1, 128, 8, 12), (1, 64, 16, 24), (1, 48, 32, 48)]
    assert all(h.shape == c.shape for h, c in state)


def test_parameter_counts_match_the_original():
    counts = {backbone: sum(p.numel() for p in MattingBase(backbone).parameters()) / 1e6
              for backbone in ('resnet50', 'mobilenetv2')}
    assert counts['resnet50'] == pytest.approx(41.86, rel=0.01)
    assert counts['mobilenetv2'] == pytest.approx(6.63, rel=0.01)


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown backbone 'resnet18'"):
        MattingBase('resnet18')


@pytest.mark.parametrize('size', [(32, 32), (45, 77), (33, 50)])
def test_odd_frame_sizes(mobilenet, size):
    with torch.no_grad():
        pha, fgr, *_ = mobilenet(torch.rand(1, 2, 3, *size))
    assert pha.shape[-2:] == size and fgr.shape[-2:] == size


def test_two_chunks_with_state_equal_one_pass(mobilenet):
    src = torch.rand(1, 6, 3, 48, 64)
    with torch.no_grad():
        whole = mobilenet(src)
        first = mobilenet(src[:, :4])
        second = mobilenet(src[:, 4:], first[4])
    for i in range(4):
        torch.testing.assert_close(torch.cat([first[i], second[i]], dim=1), whole[i], atol=1e-5, rtol=0)
    for (h1, c1), (h2, c2) in zip(second[4], whole[4]):
        torch.testing.assert_close(h1, h2, atol=1e-5, rtol=0)
        torch.testing.assert_close(c1, c2, atol=1e-5, rtol=0)


@pytest.mark.parametrize('recurrent', [True, False])
def test_earlier_frames_matter_only_when_recurrent(recurrent):
    torch.manual_seed(0)
    model = MattingBase('mobilenetv2', recurrent=recurrent).eval()
    src = torch.rand(1, 4, 3, 48, 64)
    changed = src.clone()
    changed[:, :3] = torch.rand(1, 3, 3, 48, 64)
    with torch.no_grad():
        last = model(src)[0][:, -1]
        last_changed = model(changed)[0][:, -1]
    difference = (last - last_changed).abs().max().item()
    if recurrent:
        assert difference > 1e-4
    else:
        assert difference == 0


def test_memory_off_at_test_is_the_without_convlstm_model():
    """The ablation's control: a recurrent model whose state is reset at every frame (validate.py
    --reset-state-every 1) computes what the same weights compute with recurrent=False."""
    torch.manual_seed(0)
    recurrent = MattingBase('mobilenetv2').eval()
    without = MattingBase('mobilenetv2', recurrent=False).eval()
    without.load_state_dict(recurrent.state_dict())
    src = torch.rand(1, 4, 3, 64, 64)
    with torch.no_grad():
        expected = without(src)[:4]
        frame_by_frame = [recurrent(src[:, t:t + 1], state=None)[:4] for t in range(4)]
        carried = recurrent(src)[0]
    for got, want in zip(zip(*frame_by_frame), expected):
        torch.testing.assert_close(torch.cat(got, dim=1), want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(carried[:, 1:], expected[0][:, 1:], atol=1e-3), 'the carried state changes later frames'


def test_without_convlstm_ignores_the_incoming_state():
    torch.manual_seed(0)
    model = MattingBase('mobilenetv2', recurrent=False).eval()
    src = torch.rand(1, 2, 3, 48, 64)
    with torch.no_grad():
        _, _, _, _, state = model(torch.rand(1, 2, 3, 48, 64))
        torch.testing.assert_close(model(src, state)[0], model(src)[0], atol=0, rtol=0)


def test_decoder_output_is_conv4_of_the_concatenation():
    torch.manual_seed(0)
    decoder = Decoder([256, 128, 64, 48, 37], [32, 24, 16, 3])
    x, frames = torch.randn(2, 48, 9, 15), torch.rand(2, 3, 17, 29)  # odd sizes: the upsampling meets the frame size
    upsampled = F.interpolate(x, size=(17, 29), mode='bilinear', align_corners=False)
    expected = decoder.conv4(torch.cat([upsampled, frames], dim=1))
    torch.testing.assert_close(decoder.output(x, frames), expected, atol=1e-5, rtol=0)


def test_convlstm_cell_matches_the_equations():
    torch.manual_seed(0)
    cell = ConvLSTMCell(5, 4)
    x, h, c = torch.randn(2, 5, 7, 9), torch.randn(2, 4, 7, 9), torch.randn(2, 4, 7, 9)
    gates = torch.nn.functional.conv2d(torch.cat([x, h], 1), cell.conv.weight, cell.conv.bias, padding=1)
    i, f, o, g = gates.chunk(4, 1)
    c_expected = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_expected = torch.sigmoid(o) * torch.tanh(c_expected)
    h_new, c_new = cell(x, (h, c))
    torch.testing.assert_close(h_new, h_expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c_new, c_expected, atol=1e-5, rtol=1e-5)
    h_zero, c_zero = cell(x)
    torch.testing.assert_close(h_zero, cell(x, (torch.zeros_like(h), torch.zeros_like(c)))[0])


def test_convlstm_forget_gate_starts_open_and_first_step_is_a_step_from_zeros():
    torch.manual_seed(0)
    cell = ConvLSTMCell(5, 4)
    i, f, o, g = cell.conv.bias.chunk(4)
    assert torch.equal(f, torch.ones(4)) and not torch.equal(i, torch.ones(4))
    x_gates = cell.input_gates(torch.randn(2, 5, 7, 9))
    first = cell.first_step(x_gates)
    from_zeros = cell.step(x_gates, cell.zero_state(x_gates))
    for got, want in zip(first, from_zeros):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_convlstm_layer_steps_through_time_like_the_cell():
    torch.manual_seed(0)
    layer = ConvLSTM(3, 4)
    x = torch.randn(2, 5, 3, 6, 6)
    hidden, (h, c) = layer(x)
    state = None
    for t in range(5):
        state = layer.cell(x[:, t], state)
        torch.testing.assert_close(hidden[:, t], state[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c, state[1], atol=1e-5, rtol=1e-5)


def test_convlstm_under_bf16_autocast_keeps_the_cell_in_fp32():
    torch.manual_seed(0)
    layer = ConvLSTM(3, 4)
    x = torch.randn(1, 3, 3, 8, 8)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        hidden, (h, c) = layer(x)
        _, (_, c_reset) = ConvLSTM(3, 4, recurrent=False)(x)
    assert hidden.dtype == torch.bfloat16 and torch.isfinite(hidden.float()).all()
    assert c.dtype == torch.float32 and c_reset.dtype == torch.float32
    # A cell that keeps almost all of itself (forget gate near 1) and adds 1e-3 a frame: in bf16, 1 + 1e-3 == 1.
    cell = ConvLSTMCell(1, 1, kernel_size=1)
    with torch.no_grad():
        cell.conv.weight.zero_()
        cell.conv.bias.copy_(torch.tensor([-6.9, 20.0, 0.0, 20.0]))  # i = sigmoid(-6.9) ~ 1e-3, f ~ 1, g ~ 1
    state = (torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        for _ in range(100):
            state = cell(torch.zeros(1, 1, 1, 1), state)
    assert state[1].item() == pytest.approx(1 + 100 * torch.sigmoid(torch.tensor(-6.9)).item(), rel=1e-3)


def test_gradients_reach_every_convlstm_parameter():
    torch.manual_seed(0)
    model = MattingBase('mobilenetv2').train()
    pha, fgr, err, hid, _ = model(torch.rand(2, 3, 3, 48, 48))
    (pha.mean() + fgr.mean() + err.mean() + hid.mean()).backward()
    for name, parameter in model.named_parameters():
        if 'convlstm' in name:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def backgroundmattingv2_state_dict(model: MattingBase) -> dict:
    """A state dict shaped like BackgroundMattingV2's: no ConvLSTMs, 6-channel (source + background) convolutions."""
    torch.manual_seed(1)
    state_dict = {name: torch.randn_like(tensor.float()).to(tensor.dtype) for name, tensor in model.state_dict().items()
                  if 'convlstm' not in name}
    first = 'backbone.conv1.weight' if 'backbone.conv1.weight' in state_dict else 'backbone.features.0.0.weight'
    for name in (first, 'decoder.conv4.weight'):
        out_channels, in_channels, *kernel = state_dict[name].shape
        state_dict[name] = torch.randn(out_channels, in_channels + 3, *kernel)
    return state_dict


@pytest.mark.parametrize('backbone', ['resnet50', 'mobilenetv2'])
def test_backgroundmattingv2_checkpoint_transfers_all_but_the_convlstms(backbone):
    model = MattingBase(backbone)
    checkpoint = backgroundmattingv2_state_dict(model)
    report = copy_matching_tensors(model, state_dict_of(checkpoint))
    own = model.state_dict()
    assert sorted(report['missing']) == sorted(name for name in own if 'convlstm' in name)
    assert len(report['missing']) == 6 and not report['mismatched'] and not report['unexpected']
    assert len(report['source_channels']) == 2
    if backbone == 'resnet50':
        assert len(own) == 380 and len(report['loaded']) + len(report['source_channels']) == 374
    torch.testing.assert_close(own['decoder.conv4.weight'], checkpoint['decoder.conv4.weight'][:, :51])
    torch.testing.assert_close(own['decoder.bn1.running_var'], checkpoint['decoder.bn1.running_var'])


def test_deeplabv3_checkpoint_in_vainf_layout_loads_backbone_and_aspp():
    model = MattingBase('mobilenetv2')
    own = model.state_dict()
    vainf = {}
    for name, tensor in own.items():
        if name.startswith('aspp.'):
            vainf['classifier.classifier.0.' + name[len('aspp.'):]] = torch.randn_like(tensor.float())
        elif name.startswith('backbone.features.'):
            block, rest = name[len('backbone.features.'):].split('.', 1)
            part = 'low_level_features' if int(block) < 4 else 'high_level_features'
            index = int(block) if int(block) < 4 else int(block) - 4
            vainf[f'backbone.{part}.{index}.{rest}'] = torch.randn_like(tensor.float())
    vainf['classifier.classifier.4.weight'] = torch.randn(21, 256, 1, 1)
    report = copy_matching_tensors(model, state_dict_of({'model_state': vainf}))
    assert not [name for name in report['missing'] if name.startswith(('backbone.', 'aspp.'))]
    assert report['unexpected'] == ['classifier.classifier.4.weight']
    torch.testing.assert_close(model.state_dict()['aspp.project.0.weight'],
                               vainf['classifier.classifier.0.project.0.weight'])


def test_checkpoint_of_another_backbone_names_both(tmp_path):
    path = tmp_path / 'mobilenet.pth'
    torch.save(MattingBase('mobilenetv2').state_dict(), path)
    checkpoint = read_checkpoint(str(path))
    assert backbone_of(checkpoint) == 'mobilenetv2'
    with pytest.raises(CheckpointError, match='mobilenetv2.*resnet50'):
        load_weights(MattingBase('resnet50'), 'resnet50', checkpoint, f'checkpoint {path}')


def test_model_settings_are_the_checkpoints(mobilenet):
    state_dict = mobilenet.state_dict()
    trained = {'model': state_dict, 'optimizer': {}, 'args': {'model_backbone': 'mobilenetv2', 'without_convlstm': True}}
    assert model_settings(trained, 'checkpoint c.pth', None, None) == ('mobilenetv2', True)
    assert model_settings(state_dict, 'checkpoint c.pth', None, None) == ('mobilenetv2', False)  # a bare state dict
    with pytest.raises(CheckpointError, match='--model-backbone resnet50 contradicts checkpoint c.pth, trained with '
                                              '--model-backbone mobilenetv2'):
        model_settings(trained, 'checkpoint c.pth', 'resnet50', None)
    with pytest.raises(CheckpointError, match='does not show which backbone.*pass --model-backbone'):
        model_settings({'model': {}}, 'checkpoint c.pth', None, None)


def test_own_checkpoint_round_trips(tmp_path, mobilenet):
    path = tmp_path / 'full.pth'
    torch.save({'model': mobilenet.state_dict(), 'epoch': 3}, path)
    torch.manual_seed(5)
    fresh = MattingBase('mobilenetv2').eval()
    load_weights(fresh, 'mobilenetv2', read_checkpoint(str(path)), f'checkpoint {path}')
    src = torch.rand(1, 2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(src)[0], mobilenet(src)[0])


def test_missing_truncated_and_foreign_checkpoints(tmp_path, mobilenet):
    with pytest.raises(CheckpointError, match='does not exist'):
        read_checkpoint(str(tmp_path / 'nope.pth'))
    path = tmp_path / 'truncated.pth'
    torch.save(mobilenet.state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match='corrupt or truncated'):
        read_checkpoint(str(path))
    not_a_checkpoint = tmp_path / 'frame.jpg'
    not_a_checkpoint.write_bytes(b'\xff\xd8\xff\xe0 a JPEG, not a checkpoint')
    with pytest.raises(CheckpointError, match=f'checkpoint {not_a_checkpoint} is corrupt .*UnpicklingError'):
        read_checkpoint(str(not_a_checkpoint))


@pytest.mark.parametrize('mode', ['full', 'sampling', 'thresholding'])
def test_refine_modes_return_full_resolution(mode):
    torch.manual_seed(0)
    model = MattingRefine('mobilenetv2', backbone_scale=0.25, refine_mode=mode,
                          refine_sample_pixels=2_000, refine_threshold=0.4).eval()
    with torch.no_grad():
        model.decoder.conv4.bias[4] = 0.5  # a predicted error around the threshold, so some patches are chosen
    src = torch.rand(1, 2, 3, 130, 198)
    with torch.no_grad():
        pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm, state = model(src)
    assert pha.shape == (1, 2, 1, 130, 198) and fgr.shape == (1, 2, 3, 130, 198)
    assert pha_sm.shape == (1, 2, 1, 33, 50) and err_sm.shape == (1, 2, 1, 33, 50)
    assert ref_sm.shape == (1, 2, 1, 33, 50) and len(state) == 3
    assert pha.min() >= 0 and pha.max() <= 1 and fgr.min() >= 0 and fgr.max() <= 1
    refined = ref_sm.sum().item()
    if mode == 'full':
        assert refined == ref_sm.numel()
    elif mode == 'sampling':
        assert refined == 2 * (2_000 // 16)
    else:
        assert refined == (err_sm > 0.4).sum().item() and 0 < refined < ref_sm.numel()


def test_refine_patches_differ_from_plain_upsampling_only_where_refined():
    torch.manual_seed(0)
    model = MattingRefine('mobilenetv2', refine_mode='sampling', refine_sample_pixels=320).eval()
    with torch.no_grad():
        model.decoder.conv4.bias[4] = 0.5
    src = torch.rand(1, 1, 3, 128, 128)
    with torch.no_grad():
        pha, _, pha_sm, _, _, ref_sm, _ = model(src)
    upsampled = torch.nn.functional.interpolate(pha_sm[0], (128, 128), mode='bilinear', align_corners=False)
    changed = (pha[0] - upsampled).abs().gt(1e-6).float()
    changed_patches = torch.nn.functional.max_pool2d(changed, 4)
    assert (changed_patches <= ref_sm[0]).all()


def test_refine_rejects_bad_settings():
    with pytest.raises(ValueError, match='refine_mode'):
        MattingRefine('mobilenetv2', refine_mode='everything')
    with pytest.raises(ValueError, match='backbone_scale'):
        MattingRefine('mobilenetv2', backbone_scale=0.75)


def test_outputs_stay_in_range_and_pass_gradient_when_out_of_range():
    torch.manual_seed(0)
    model = MattingBase('mobilenetv2').train()
    with torch.no_grad():
        model.decoder.conv4.bias[0] = -50.0  # alpha far below 0 everywhere: a plain clamp would give no gradient
    pha, fgr, err, _, _ = model(torch.rand(2, 2, 3, 32, 32))
    assert pha.min() >= 0 and pha.max() <= 1 and fgr.min() >= 0 and fgr.max() <= 1
    assert pha.max() == 0
    torch.nn.functional.l1_loss(pha, torch.ones_like(pha)).backward()
    assert model.decoder.conv4.bias.grad[0] < 0  # gradient descent raises the alpha bias
