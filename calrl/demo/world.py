"""A small world with knowable ground truth, generated deterministically from a seed.

Questions are facts about invented people: "where does vomira live ?" -> one of a few invented cities.
Every person belongs to one slice, recorded on each item as ``group``:

* ``fact-often``: the SFT demonstrations state the person's true city several times (knowable);
* ``fact-rarely``: two demonstrations that disagree, the true city and a wrong one (a rumour), so the policy
  can at best half-know it (not in the default world: see ``WorldConfig.frequencies``);
* ``fact-never``: the demonstrations state wrong cities (hallucinations), so the policy answers wrongly and
  should say it is unsure.

The held-out split asks about every person once; RL prompts ask about the well-known and the never-seen people
(``WorldConfig.rl_frequencies`` says why not the rarely-seen ones); preference prompts about anyone: the raters
hold the registry, so they can check every answer, including those about people the policy never saw. Nothing
here reads the network; the same seed gives the same world on every machine.

The RL prompts ask about the held-out set's own people: a 2-layer policy memorises person by person, and RL on
other never-seen people moved the held-out never-seen people's stated confidence by 0.02-0.08 only (tried with
40 RL-only people), so the study would not show what RL does to the answers it measures.

(A draft also had sums of growing length; a 2-layer model trained from scratch within the time budget
learnt neither one- nor two-digit addition beyond a few percent, so they were dropped: see the README, "What we found while building it".)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from calrl.data.heldout import EvalItem

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z"]
_VOWELS = ["a", "e", "i", "o", "u"]
FREQUENCIES = ("often", "rarely", "never")


def group_of(frequency: str) -> str:
    """The slice (``group``) of the people seen with ``frequency``: ``fact-often`` and so on."""
    return f"fact-{frequency}"


GROUPS = tuple(group_of(f) for f in FREQUENCIES)


@dataclass
class WorldConfig:
    """Sizes of the world; the defaults fit the 15-minute budget of ``make demo`` on 2 CPU cores."""

    seed: int = 0
    # 48 cities, not 8: RL pushes a never-seen person's answer away from its two hallucinated cities, and a city
    # it then samples may be the true one, which the reward model rewards; the policy learnt 2-13% of the
    # never-seen people's cities that way, at method-dependent rates, and "accuracy within 2 points" measured
    # that. The SFT policy's probability of a never-seen person's true city, averaged over them: 0.5-1.6% with 8
    # cities, 0.2% with 24, 0.06-0.18% with 48; with 48 the four policies' accuracies lay within 0.500-0.517 in
    # every seed (docs/history/demo_findings.md, fourth section)
    n_cities: int = 48
    # the slices of the world. Not the rarely-seen people by default: their policy is torn between two cities,
    # so any update flips some greedy answers; PPO, PPO-M and PPO-C then differed in accuracy by those flips
    # (up to 20 points on that slice, 7 overall, seed to seed) and "within 2 points" measured the flips
    frequencies: tuple[str, ...] = ("often", "never")
    people_per_frequency: int = 60
    often_repeats: int = 6  # SFT demonstrations of an often-person's true city
    # SFT demonstrations of a never-person, each a wrong city (a hallucination). A random guess was right about
    # one time in 8 (the number of cities then), and which guesses PPO changed moved the never-seen slice's accuracy
    # by up to 15 points.
    # Two, not one: with one each (and SFT at learning rate 5e-3) the SFT policy stated 8-10 on the never-seen
    # people in 3 of 5 seeds
    never_guesses: int = 2
    n_rl_prompts: int = 256
    # whom the RL prompts ask about: the well-known and the never-seen people. Not the rarely-seen ones: the
    # reward models know their true city and the policy is torn between two, so PPO would teach it their
    # cities, faster or slower by method, and the methods' accuracies would differ by what PPO taught them
    # rather than by how they state confidence (seen: +15 to +28 points on that slice after 16 updates)
    rl_frequencies: tuple[str, ...] = ("often", "never")
    n_preference_prompts: int = 600

    def __post_init__(self) -> None:
        unknown = sorted(set(self.frequencies) - set(FREQUENCIES))
        if unknown or not self.frequencies:
            raise ValueError(f"WorldConfig.frequencies: {unknown or 'none'}; choose among {', '.join(FREQUENCIES)}")
        if not set(self.rl_frequencies) & set(self.frequencies):
            raise ValueError(f"WorldConfig.rl_frequencies {list(self.rl_frequencies)}: the RL prompts would ask about "
                             f"nobody; choose among the world's slices {', '.join(self.frequencies)}")

    @property
    def groups(self) -> tuple[str, ...]:
        """The slices of this world, in ``GROUPS`` order."""
        return tuple(g for g in GROUPS if g in {group_of(f) for f in self.frequencies})


@dataclass
class World:
    """The generated world: facts, and the item splits every stage of the study uses."""

    config: WorldConfig
    cities: list[str]
    people: dict[str, tuple[str, str]]  # name -> (true city, frequency)
    sft_items: list[EvalItem] = field(default_factory=list)  # reference = the SFT demonstration's answer
    rl_items: list[EvalItem] = field(default_factory=list)
    preference_items: list[EvalItem] = field(default_factory=list)
    eval_items: list[EvalItem] = field(default_factory=list)

    def all_items(self) -> list[EvalItem]:
        return [*self.sft_items, *self.rl_items, *self.preference_items, *self.eval_items]

    def wrong_answer(self, item: EvalItem, rng: random.Random) -> str:
        """Another city than the item's reference."""
        return other_city(self.cities, item.reference[0], rng)


def _names(rng: random.Random, n: int, syllables: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        name = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables))
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out


def other_city(cities: list[str], city: str, rng: random.Random) -> str:
    """A city drawn from ``cities`` other than ``city`` (a wrong answer, a rumour, a hallucination)."""
    return rng.choice([c for c in cities if c != city])


def fact_item(uid: str, person: str, city: str, frequency: str) -> EvalItem:
    return EvalItem(id=uid, question=f"where does {person} live ?", reference=[city], choices=None,
                    slice={"group": group_of(frequency)})


def build_world(config: WorldConfig | None = None) -> World:
    """Generate the world and its SFT, RL-prompt, preference and evaluation splits from ``config.seed``."""
    config = config or WorldConfig()
    rng = random.Random(config.seed)
    taken: set[str] = set()
    cities = _names(rng, config.n_cities, 2, taken)
    names = _names(rng, config.people_per_frequency * len(config.frequencies), 3, taken)
    people = {name: (rng.choice(cities), config.frequencies[i // config.people_per_frequency])
              for i, name in enumerate(names)}
    world = World(config=config, cities=cities, people=people)

    k = 0
    for name, (city, freq) in people.items():
        if freq == "often":
            demos = [city] * config.often_repeats
        elif freq == "rarely":
            demos = [city, other_city(cities, city, rng)]
        else:
            demos = [other_city(cities, city, rng) for _ in range(config.never_guesses)]
        for answer in demos:
            world.sft_items.append(fact_item(f"sft-{k}", name, answer, freq))
            k += 1
        world.eval_items.append(fact_item(f"eval-{name}", name, city, freq))
    rng.shuffle(world.sft_items)

    asked = [n for n, (_, f) in people.items() if f in config.rl_frequencies]
    for j in range(config.n_rl_prompts):
        name = rng.choice(asked)
        world.rl_items.append(fact_item(f"rl-{j}", name, *people[name]))
    for j in range(config.n_preference_prompts):
        name = rng.choice(names)
        world.preference_items.append(fact_item(f"pref-{j}", name, *people[name]))
    return world
