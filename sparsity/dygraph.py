"""Binding to a paddle.nn.Layer in dynamic mode, and a paddle.callbacks.Callback for paddle.Model.fit.

Masks are persistable buffers registered beside each parameter (`fc.weight` -> `fc.weight_mask`),
so they live in the model's `state_dict()` and `paddle.save` / `paddle.load` resume them. They are
applied right after `optimizer.step()` by `pruner.step()`, with no forward hooks; the forward pass
never reads them, so `paddle.jit.save` exports the model without them.
"""
import numpy as np
import paddle

from .static import Param, mask_name

NORM_LAYERS = tuple(
    getattr(paddle.nn, name)
    for name in (
        "BatchNorm", "BatchNorm1D", "BatchNorm2D", "BatchNorm3D", "SyncBatchNorm", "LayerNorm", "GroupNorm",
        "InstanceNorm1D", "InstanceNorm2D", "InstanceNorm3D", "LocalResponseNorm", "SpectralNorm", "RMSNorm",
    )
    if hasattr(paddle.nn, name)
)


def norm_layer_names(model):
    """full_name() of every normalization layer of a model: what PaddleSlim's dygraph skip rule names."""
    return {layer.full_name() for layer in model.sublayers(include_self=True) if isinstance(layer, NORM_LAYERS)}


def is_model(obj):
    """True for a paddle.nn.Layer; refused outside dynamic mode (a static program is pruned through its Program)."""
    if not isinstance(obj, paddle.nn.Layer):
        return False
    if not paddle.in_dynamic_mode():
        raise ValueError(
            "a paddle.nn.Layer is pruned in dynamic mode; in static mode pass the Program "
            "(and structural_names=sparsity.static.structural_names(layer) for structural names)"
        )
    return True


class DygraphBinding:
    """The pruner's view of a dygraph model: its parameters by structural name, mask buffers, eager mask ops."""

    def __init__(self, model):
        self.model = model
        named = list(model.named_parameters())
        self.model_params = [Param(p.name, tuple(p.shape), p, not p.stop_gradient) for _, p in named]
        self._tensors = {p.name: p for _, p in named}
        self.structural_names = {p.name: key for key, p in named}
        self.norm_names = {
            p.name for layer in model.sublayers(include_self=True) if isinstance(layer, NORM_LAYERS) for p in layer.parameters(include_sublayers=False)
        }
        # a skip set may name a layer by full_name() (PaddleSlim's does, for normalization layers): its own parameters
        self.layer_params = {
            layer.full_name(): [p.name for p in layer.parameters(include_sublayers=False)] for layer in model.sublayers(include_self=True)
        }
        self.no_grad_set = set()
        self.masks, self.pruned = {}, []

    def create_masks(self, pruned):
        """A buffer of ones `<attribute>_mask` on the layer owning each parameter (reused when the model has it already)."""
        layers = dict(self.model.named_sublayers(include_self=True))
        for p in self.model_params:
            owner, _, attribute = self.structural_names[p.name].rpartition(".")
            layer = layers[owner]
            name = mask_name(attribute)
            if layer._buffers.get(name) is None:
                layer.register_buffer(name, paddle.ones(list(p.shape), "float32"), persistable=True)
            self.masks[p.name] = layer._buffers[name]
        self.pruned = list(pruned)
        return self.masks

    def ensure_initialized(self):
        """A mask buffer that user code wrote in another dtype (PaddleSlim's quantization flow assigns bool
        masks) becomes float32 0/1 again, the same buffer, so the state dict keeps float32 masks."""
        with paddle.no_grad():
            for m in self.masks.values():
                if m.dtype != paddle.float32:
                    paddle.assign(paddle.cast(m, "float32"), output=m)

    def run(self, key, build, feed=None, feed_dtype=None):
        """Run `build(weights, masks, feed)` eagerly on the pruned weights and their masks; outputs as floats."""
        self.ensure_initialized()
        with paddle.no_grad():
            weights = [p.handle for p in self.pruned]
            masks = [self.masks[p.name] for p in self.pruned]
            outputs = build(weights, masks, None if feed is None else paddle.to_tensor(feed, feed_dtype))
        return [float(np.asarray(t.numpy()).reshape(-1)[0]) for t in outputs]

    def after_step(self, apply_masks):
        """The optimizer has just updated the weights: mask them."""
        apply_masks()

    def read(self, name):
        return self._tensors[name].numpy()

    def write_mask(self, name, mask):
        """Set the mask of parameter `name` (0/1, its shape); it applies from the next masking on."""
        self.masks[name].set_value(np.asarray(mask, "float32"))


class PruningCallback(paddle.callbacks.Callback):
    """`paddle.Model.fit(..., callbacks=[PruningCallback(pruner)])`: one `pruner.step()` after every training batch."""

    def __init__(self, pruner):
        super().__init__()
        self.pruner = pruner

    def on_train_batch_end(self, step, logs=None):
        self.pruner.step()
