"""Which runs share a stack, and the model each stack trains: small models stacked as many as fit the device's
memory, BERT runs with --stack_text_runs as a TextStack (one network a run, or twins), other backbone runs one
at a time; each run's networks drawn from its seed as a run alone draws them."""
import torch

from XRM.algorithms import get_algorithm_class
from XRM.common.errors import UserError
from XRM.engine.batches import input_shape
from XRM.engine.memory_budget import split_to_fit
from XRM.engine.model_stacks import ModuleStack, ParameterStack
from XRM.engine.text_stack import TextStack
from XRM.networks.classifiers import TwinNetwork, build_network, use_cuda_graphs
from XRM.networks.packed_bert import supports_packing
from XRM.runs.inputs import StackData
from XRM.runs.members import Member


def slice_key(member: Member) -> tuple:
    """Members with equal keys share an algorithm slice: one algorithm, equally shaped state."""
    algorithm = get_algorithm_class(member.spec.algorithm)(member.run_data.num_classes)
    return member.spec.algorithm, algorithm.state_signature(member.run_data)


def _ordered_for_slices(members: list[Member]) -> list[Member]:
    return sorted(members, key=slice_key)


def stack_groups(members: list[Member], data: StackData, stack_size: int | None, device: torch.device,
                 dtype: torch.dtype) -> list[list[Member]]:
    """Members that may share a stack (small models, and text runs with --stack_text_runs: same start step,
    optimiser, networks per run, head), split to fit memory; the others one at a time."""
    by_key: dict[tuple, list[Member]] = {}
    alone = []
    for member in members:
        if not (data.small_model or member.spec.trains_in_text_stack(data.family)):
            alone.append([member])
            continue
        cls = get_algorithm_class(member.spec.algorithm)
        key = (member.start, member.setup.hparams["optimizer"], cls.networks_per_run, cls.head,
               member.setup.hparams["num_steps"], member.setup.hparams["eval_every"])
        by_key.setdefault(key, []).append(member)
    groups = []
    for group in by_key.values():
        groups += split_to_fit(_ordered_for_slices(group), data, stack_size, device, dtype)
    return groups + alone


def networks_of(member: Member, data: StackData) -> list[torch.nn.Module]:
    """The run's freshly initialised network(s), drawn from its seed as a run alone draws them."""
    cls = get_algorithm_class(member.spec.algorithm)
    shape = input_shape(data.splits["tr"].x)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(member.spec.seed)
        networks = [build_network(data.family, shape, data.num_classes, member.setup.hparams, data.backbone)
                    for _ in range(cls.networks_per_run)]
        cls(data.num_classes).initialise_networks(networks, member.setup.hparams)
    if member.setup.base_model is not None:  # last-layer retraining starts from its base model's head
        for network in networks:
            network.load_state_dict({key: value.float() for key, value in member.setup.base_model.items()})
    return networks


def _text_stack(members: list[Member], data: StackData, device: torch.device) -> TextStack:
    """The members' BERT classifiers (a twin run's two), each drawn as its run alone draws it, trained as one
    TextStack."""
    classifiers = [network for member in members for network in networks_of(member, data)]
    if not supports_packing(classifiers[0].encoder):
        raise UserError(f"--stack_text_runs stacks plain BERT encoders only (absolute positions, a pooler); "
                        f"{data.backbone.name} is not one: train its runs without --stack_text_runs")
    # eager passes: the stack's graphed pass (TextStack's cuda_graphs) has not yet run on a GPU
    return TextStack(classifiers, [m.setup.hparams for m in members], [m.spec.seed for m in members], device,
                     networks_per_run=get_algorithm_class(members[0].spec.algorithm).networks_per_run)


def stack_model(members: list[Member], data: StackData, device: torch.device,
                dtype: torch.dtype) -> ParameterStack | TextStack | ModuleStack:
    """The model a group of ``members`` (stack_groups') trains: small models as one ParameterStack, text runs with
    --stack_text_runs as one TextStack, a backbone run alone as a ModuleStack (on a GPU its passes replayed from CUDA
    graphs; the global generators, which its dropout draws from, seeded from its seed)."""
    hparams = [member.setup.hparams for member in members]
    if data.small_model:
        head = get_algorithm_class(members[0].spec.algorithm).head  # one per group (stack_groups)
        return ParameterStack([networks_of(m, data) for m in members], hparams, dtype, device, head)
    if members[0].spec.trains_in_text_stack(data.family):  # one per group (stack_groups)
        return _text_stack(members, data, device)
    networks = networks_of(members[0], data)
    network = TwinNetwork(*networks) if len(networks) == 2 else networks[0]
    model = ModuleStack(network, hparams[0], device, members[0].spec.num_workers)
    if device.type == "cuda" and members[0].spec.cuda_graphs:  # images: captured now, before any loader thread runs
        images = None
        if data.family == "image":
            images = (hparams[0]["batch_size"], *input_shape(data.splits["tr"].x))
        use_cuda_graphs(network, images, members[0].spec.compile_backbone)
    torch.manual_seed(members[0].spec.seed)
    return model
