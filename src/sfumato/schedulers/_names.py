"""Public names of sfumato.schedulers -> defining module (torch-free, read by `sfumato/__init__`)."""

_S = "sfumato.schedulers."
NAMES: dict[str, str] = {
    "SchedulerMixin": _S + "base",
    "SchedulerOutput": _S + "base",
    "DDPMScheduler": _S + "ddpm",
    "DDIMScheduler": _S + "ddim",
    "EulerDiscreteScheduler": _S + "euler",
    "EulerAncestralDiscreteScheduler": _S + "euler_ancestral",
    "DPMSolverMultistepScheduler": _S + "dpm_multistep",
    "PNDMScheduler": _S + "pndm",
    "LMSDiscreteScheduler": _S + "lms",
    "HeunDiscreteScheduler": _S + "heun",
    "KDPM2DiscreteScheduler": _S + "kdpm2",
    "KDPM2AncestralDiscreteScheduler": _S + "kdpm2",
    "UniPCMultistepScheduler": _S + "unipc",
    "DEISMultistepScheduler": _S + "deis",
    "DPMSolverSinglestepScheduler": _S + "dpm_singlestep",
    "LCMScheduler": _S + "lcm",
    "FlowMatchEulerDiscreteScheduler": _S + "flow_match",
}
# Names only reachable as `sfumato.schedulers.X` (not re-exported at the top level).
PACKAGE_NAMES: dict[str, str] = {
    "from_name": _S + "names",
    "to_name": _S + "names",
    "SAMPLER_NAMES": _S + "names",
}
