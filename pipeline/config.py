"""Configuration: YAML file + `--set dotted.key=value` overrides, validated once into typed objects.

Every default here is the embedded default (the bundled Adult table, local Ray,
files under ./runs/, sqlite MLflow), so `cvae run` with no arguments is the demo.
"""
from __future__ import annotations

import difflib
import re

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from pipeline.errors import UserError

BUNDLED_DATA = resources.files("pipeline") / "data"
DEFAULT_DATA_PATH = str(BUNDLED_DATA / "adult.parquet")
DEFAULT_CONDITIONS = ["income"]

# kinds, and the personal-data roles of string columns (codec/kinds.py PERSONAL_ROLES)
ColumnKind = Literal["continuous", "integer", "categorical", "list", "id", "first_name", "last_name", "full_name",
                     "email", "street_address", "city", "state", "postcode", "phone_number"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ChildConfig(Section):
    """A child table of `data.path` (pipeline/linked/): each of its rows belongs to the parent row whose
    `data.key` its `foreign_key` holds; `order_by` orders one parent's children (a sequence)."""
    path: str = Field(min_length=1)
    foreign_key: str = Field(min_length=1)
    order_by: list[str] = []
    columns: dict[str, ColumnKind] = {}
    exclude: list[str] = []
    storage_options: dict[str, Any] = {}
    max_children: int = Field(10_000, ge=1)  # a parent with more children than this is an error, not a sequence


class DataConfig(Section):
    path: str = Field(DEFAULT_DATA_PATH, min_length=1)
    conditions: list[str] | None = None
    # condition columns whose values every generated row is given (a Parquet of condition rows; a child table's
    # parent row): never drawn from a training distribution, so any number of distinct values
    context: list[str] = []
    key: str | None = Field(None, min_length=1)  # the table's primary key: required with `children`
    children: dict[str, ChildConfig] = {}  # linked tables: name (its output folder) -> its table and foreign key
    columns: dict[str, ColumnKind] = {}
    exclude: list[str] = []
    storage_options: dict[str, Any] = {}
    holdout_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    rules: list[str | dict[str, Any]] = []  # rules every generated row keeps (pipeline/rules/rule.py)
    rules_found: Literal["apply", "suggest", "off"] = "apply"  # rules the training rows keep in every row
    # training rows that break a declared rule: an error naming one, or left out of training (and counted)
    rules_breaking: Literal["error", "leave_out"] = "error"

    @field_validator("rules_found", mode="before")
    @classmethod
    def _off_as_yaml_reads_it(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false

    @field_validator("rules")
    @classmethod
    def _rules_parse(cls, rules: list) -> list:
        from pipeline.rules.rule import parse_rules

        try:
            parse_rules(rules)
        except UserError as exc:
            raise ValueError(str(exc).removeprefix("data.rules")) from None
        return rules

    @property
    def condition_columns(self) -> list[str]:
        """Every column the model is conditioned on: `conditions`, then `context`."""
        return [*self.conditions, *self.context]

    @field_validator("children")
    @classmethod
    def _child_names(cls, children: dict) -> dict:
        for name in children:
            if folder_name(name) != name or name.startswith(("_", ".")):
                raise ValueError(f"{name!r}: a child table's name is its output folder; use letters, digits, "
                                 "'.', '_' or '-', not starting with '_' or '.'")
        return children

    @model_validator(mode="after")
    def _conditions_required(self, info: ValidationInfo) -> "DataConfig":
        if self.children and self.key is None:
            raise ValueError("key: required with data.children; name the parent table's primary key column")
        if self.conditions is None and (self.children or self.context):
            object.__setattr__(self, "conditions", [])  # linked: the parent model conditions on its child counts
        elif self.conditions is None and (info.context or {}).get("conditions_optional"):
            object.__setattr__(self, "conditions", [])  # `cvae inspect`: a first look, before choosing them
        elif self.conditions is None:
            if self.path != DEFAULT_DATA_PATH:
                raise ValueError("conditions: required for a table other than the bundled default; "
                                 "set data.conditions to a list of column names")
            object.__setattr__(self, "conditions", list(DEFAULT_CONDITIONS))
        elif not self.conditions and not self.children and not self.context:
            raise ValueError("conditions: must name at least one column")
        if len(set(self.conditions + self.context)) != len(self.conditions) + len(self.context):
            raise ValueError(f"conditions: repeated column in {self.conditions + self.context} (data.context included)")
        both = [name for name in self.exclude if name in self.conditions or name in self.columns]
        if both:
            raise ValueError(f"exclude: {both[0]!r} is also in data.conditions or data.columns; a column is either "
                             "modelled or left out")
        return self


class EncoderConfig(Section):
    max_categories: int = Field(100, ge=2, le=100_000)
    min_value_count: int = Field(5, ge=1)  # k: a value seen in fewer training rows never leaves in a model or output
    rare_replacement: Literal["token", "frequent"] = "token"
    typed_strings: bool = True  # find dates, times, numbers and personal data in string columns
    locale: str = Field("en_US", min_length=2)  # Faker's locale for personal-data columns without a country column
    sample_size: int = Field(100_000, ge=100)
    quantiles: int = Field(1000, ge=10, le=100_000)
    point_mass_share: float = Field(0.01, ge=0.0, lt=1.0)  # a numeric value this common is a class of its own; 0: off
    max_condition_combinations: int = Field(10_000, ge=1)


class ModelConfig(Section):
    latent_dim: int = Field(32, ge=1, le=4096)
    hidden: list[int] = Field([256, 256], min_length=1)
    prior: Literal["standard", "conditional"] = "conditional"
    variance: Literal["learned", "fixed"] = "learned"
    sigma: float = Field(0.1, gt=0.0)
    beta: float = Field(1.0, ge=0.0)
    kl_warmup_epochs: int = Field(0, ge=0)
    latent_mixture: int = Field(20, ge=0, le=256)  # components per condition combination fitted after training

    @model_validator(mode="after")
    def _positive_widths(self) -> "ModelConfig":
        if any(width < 1 for width in self.hidden):
            raise ValueError(f"hidden: every width must be >= 1, got {self.hidden}")
        return self


class PrivacyConfig(Section):
    """Differentially private training (off while `epsilon` is null): DP-SGD on every worker plus noisy encoder
    statistics, together (epsilon, delta)-DP for every training row; see pipeline/privacy.py."""
    epsilon: float | None = Field(None, gt=0.0)  # the total budget; training stops before it is exceeded
    delta: float | None = Field(None, gt=0.0, lt=1.0)  # null: 1 / (10 x training rows), capped at 1e-5
    max_grad_norm: float = Field(1.0, gt=0.0)  # each row's gradient is clipped to this L2 norm
    noise_multiplier: float | None = Field(None, gt=0.0)  # null: the least noise that fits the budget and epochs
    statistics_share: float = Field(0.2, gt=0.0, lt=1.0)  # of epsilon and delta, spent on the encoder's statistics
    public_columns: list[str] = []  # columns whose statistics the user declares public: fitted without noise
    noise_seed: int | None = Field(None, ge=0)  # secret: whoever knows it can remove the noise; null draws one per run

    @model_validator(mode="after")
    def _settings_need_a_budget(self) -> "PrivacyConfig":
        if self.epsilon is None and (self.noise_multiplier is not None or self.public_columns
                                     or self.delta is not None):
            raise ValueError("epsilon: required when other train.privacy settings are given; "
                             "e.g. --set train.privacy.epsilon=4")
        return self


class TrainConfig(Section):
    name: str | None = Field(None, min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")  # None: the model's name
    epochs: int | Literal["auto"] = "auto"  # auto: enough epochs for about AUTO_STEPS optimizer steps (train.py)
    batch_size: int = Field(500, ge=1)
    lr: float = Field(3e-3, gt=0.0)
    lr_schedule: Literal["cosine", "constant"] = "cosine"  # cosine: from train.lr down to 0 over the epochs
    weight_decay: float = Field(0.0, ge=0.0)
    num_workers: int = Field(2, ge=1)
    cpus_per_worker: float = Field(0.5, gt=0.0)
    use_gpu: bool = False
    seed: int = Field(0, ge=0)
    storage_path: str = Field("./runs/train", min_length=1)
    storage_options: dict[str, Any] = {}
    max_failures: int = Field(1, ge=0)
    cache: Literal["auto", "always", "never"] = "auto"
    keep_checkpoints: int = Field(2, ge=1)
    early_stopping_patience: int = Field(0, ge=0)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)

    @field_validator("epochs")
    @classmethod
    def _at_least_one_epoch(cls, epochs: int | str) -> int | str:
        if isinstance(epochs, int) and epochs < 1:
            raise ValueError(f"must be >= 1 or auto, got {epochs}")
        return epochs

    @model_validator(mode="after")
    def _private_runs_do_not_stop_early(self) -> "TrainConfig":
        if self.privacy.epsilon is not None and self.early_stopping_patience:
            raise ValueError("early_stopping_patience: not available with train.privacy.epsilon (stopping on "
                             "holdout scores would make the model depend on holdout rows); set it to 0")
        return self


class MLflowConfig(Section):
    tracking_uri: str = Field("sqlite:///mlflow.db", min_length=1)
    experiment: str = Field("cvae", min_length=1)
    model_name: str | None = Field(None, min_length=1)
    alias: str | None = Field("candidate", pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")


DEFAULT_OUTPUT_ROOT = "./runs/synthetic"


def folder_name(text: str) -> str:
    """`text` as one safe path segment: each run of characters other than letters, digits, `.`, `_`, `-` -> `-`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)


class GenerateConfig(Section):
    model_uri: str | None = Field(None, min_length=1)
    num_rows: int = Field(10_000, ge=1)
    conditions: str | dict[str, Any] | list[dict[str, Any]] = "proportional"
    output: str | None = Field(None, min_length=1)  # None: ./runs/synthetic/NAME-vVERSION of the model generated from
    storage_options: dict[str, Any] = {}
    seed: int = Field(0, ge=0)
    num_workers: int | Literal["auto"] = "auto"  # auto: as many actors as the cluster's CPUs (or GPUs) hold
    cpus_per_worker: int = Field(1, ge=1)  # each actor's CPUs and torch threads
    in_process_rows: int = Field(100_000, ge=0)  # jobs this small are written by the driver: no actors to start
    rows_per_part: int = Field(100_000, ge=1)
    use_gpu: bool = False
    precision: Literal["float32", "bfloat16"] = "float32"
    allow_unseen_continuous: bool = False

    @field_validator("conditions", mode="before")
    @classmethod
    def _plan_shape(cls, plan: Any) -> Any:
        """Only the shape here; values are checked against the model's encoder at generation."""
        if isinstance(plan, str) and plan:
            return plan
        if isinstance(plan, dict) and plan and all(isinstance(counts, dict) for counts in plan.values()):
            return plan
        if isinstance(plan, list) and plan and all(isinstance(combo, dict) for combo in plan):
            return plan
        raise ValueError("expected 'proportional', a Parquet URI of condition rows, "
                         "{column: {value: count}} or a list of {column: value, ..., count: N}, "
                         f"got {plan!r}")

    def output_for(self, model_version_uri: str) -> str:
        """`output`, or a folder of its own per registered model version (`models:/NAME/VERSION`): a second
        table's (or model's) output never lands in the first one's."""
        if self.output:
            return self.output
        name = model_version_uri.removeprefix("models:/").replace("/", "-v", 1) \
            if model_version_uri.startswith("models:/") else model_version_uri
        return f"{DEFAULT_OUTPUT_ROOT}/{folder_name(name).strip('-')}"


class EvaluateConfig(Section):
    synthetic: str | None = Field(None, min_length=1)
    sample_rows: int = Field(50_000, ge=100)
    privacy_rows: int = Field(5_000, ge=10)
    target: str | None = Field(None, min_length=1)
    seed: int = Field(0, ge=0)
    promote_alias: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")
    min_quality: float | None = Field(None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _gate_complete(self) -> "EvaluateConfig":
        if self.promote_alias is not None and self.min_quality is None:
            raise ValueError("min_quality: required when evaluate.promote_alias is set; e.g. --set evaluate.min_quality=0.9")
        return self


class RayConfig(Section):
    address: str | None = None


class Config(Section):
    data: DataConfig = Field(default_factory=DataConfig)  # a fresh section per config: validators fill in defaults
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    mlflow: MLflowConfig = Field(default_factory=MLflowConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="after")
    def _default_model_name(self) -> "Config":
        if self.mlflow.model_name is None:
            stem = Path(self.data.path.rstrip("/")).name.split(".")[0] or "table"
            object.__setattr__(self.mlflow, "model_name", f"{stem}-cvae")
        if self.train.name is None:  # a job folder per model: a second table never meets the first one's checkpoints
            object.__setattr__(self.train, "name", folder_name(self.mlflow.model_name))
        return self

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values, as logged to MLflow params."""
        return _flatten(self.model_dump())


def load_config(path: str | None = None, overrides: list[str] = (), conditions_optional: bool = False) -> Config:
    """Read FILE (or the embedded default), apply `--set` overrides, validate once. `conditions_optional`: a
    table other than the bundled one may leave `data.conditions` unset (`cvae inspect` needs none)."""
    raw = _read_yaml(path) if path else {}
    set_keys = []
    for item in overrides:
        key, value = _parse_override(item)
        _assign(raw, key, value)
        set_keys.append(key)
    try:
        return Config.model_validate(raw, context={"conditions_optional": conditions_optional})
    except ValidationError as exc:
        raise UserError(_one_line(exc, path, set_keys)) from None


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UserError(f"config file {path}: cannot read it ({exc.strerror}); pass an existing YAML file to --config") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UserError(f"config file {path}: malformed YAML{where}: {problem}; fix the syntax") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"config file {path}: top level must be a mapping of sections (data, train, ...), "
                        f"got {type(raw).__name__}")
    return raw


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"--set {item!r}: expected dotted.key=value, e.g. --set train.epochs=5")
    try:
        return key, yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        return key, value


def _assign(raw: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = raw
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"--set {key}: {'.'.join(parents[: i + 1])} is not a section")
        node = child
    node[leaf] = value


def _one_line(exc: ValidationError, source: str | None, set_keys: list[str]) -> str:
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"] if not str(part).startswith(("function-", "union"))]
    key = ".".join(loc)
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        section = _section_fields(loc[:-1])
        close = difflib.get_close_matches(loc[-1], section, n=1)
        meant = f"did you mean {close[0]!r}? " if close else ""
        message = f"unknown key; {meant}valid keys here: {', '.join(section)}" if section else "unknown key"
    elif error["type"] == "missing":
        message = "required value is missing"
    elif "input" in error and error["type"] not in ("value_error", "assertion_error"):
        message = f"{message} (got {error['input']!r})"
    if error["type"] == "value_error" and _section_fields(loc) and ": " in message:
        sub_key, _, message = message.partition(": ")
        key = f"{key}.{sub_key}" if key else sub_key
    # the --set that wrote the key, or one below it (a misspelt section: `--set dat.path=...` fails at `dat`)
    origin = next((f"--set {k}" for k in set_keys if k == key or key.startswith(k + ".") or k.startswith(key + ".")),
                  source)
    where = f" in {origin}" if origin else ""  # a key nobody set (a required one): no file or flag to blame
    return f"config error{where}: {key or 'config'}: {message}"


def _section_fields(loc: list[str]) -> list[str]:
    model: Any = Config
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value) and key != "conditions":
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat
