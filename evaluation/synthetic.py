"""LongEmbed-style synthetic tasks ("passkey", "needle"): one short sentence hidden in long real prose.

The haystack is the language-reference text that ships with Python (``pydoc_data.topics.topics``, topics in
sorted order, joined by blank lines, read as a ring), cut at sentence and paragraph boundaries. Per target
length there is one pool: each candidate starts at a different sentence of the prose and runs until the whole
document, inserted sentence included, is within ``FIT_TOLERANCE`` of the target in model tokens (special tokens
counted). The sentence goes in at a uniformly random sentence boundary (depth).

- passkey: "<name>'s pass key is <n>. Remember it. <n> is the pass key for <name>." -> "what is the pass key
  for <name>?". Names differ across a pool's candidates and never occur in the prose; numbers are distinct
  5-digit numbers that never occur in the prose, so each appears in exactly one document.
- needle: one templated fact about a distinct (adjective, object, place) per candidate, e.g. "The amber
  lantern of Lisbon is kept in a cedar chest." -> "Where is the amber lantern of Lisbon kept?".

Half of each pool's candidates are queried (50 of 100; small: 10 of 20); the rest are distractors.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from longvec.chunking.budget import TokenCounter
from longvec.evaluation.types import Dataset, EvalDoc, EvalQuery

LENGTHS = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
SMALL_LENGTHS = (256, 512)
FIT_TOLERANCE = 0.03
_BOUNDARY = re.compile(r"\n[ \t]*\n\s*|(?<=[.!?])[\"')\]]*[ \t\n]+(?=[A-Z\"(])")

NAMES = (
    "Abigail", "Adaeze", "Ainhoa", "Akira", "Alejandro", "Amara", "Anneliese", "Anouk", "Arjun", "Astrid",
    "Aurelio", "Bartholomew", "Beatriz", "Bjorn", "Bronwyn", "Caoimhe", "Casimir", "Cecilia", "Chiamaka",
    "Cosima", "Dagny", "Dmitri", "Dolores", "Eamon", "Eleonora", "Elif", "Emeka", "Esperanza", "Ezekiel",
    "Fatima", "Felicity", "Florian", "Gabriela", "Gideon", "Giovanna", "Gwendolyn", "Hamish", "Hanneke",
    "Hiroshi", "Ignatius", "Ilse", "Imogen", "Isadora", "Jasper", "Jovana", "Kalani", "Katarina", "Kenji",
    "Kwame", "Leocadia", "Leopold", "Lorcan", "Ludmila", "Magdalena", "Malakai", "Marisol", "Matilda",
    "Maximilian", "Mireille", "Nadezhda", "Naledi", "Nikolai", "Niamh", "Octavia", "Oluwaseun", "Ophelia",
    "Orlaith", "Pasquale", "Penelope", "Perpetua", "Priyanka", "Quentin", "Radomir", "Rosalind", "Rufus",
    "Saoirse", "Sebastiano", "Seraphina", "Siddharth", "Sigrid", "Solveig", "Sunniva", "Tadeusz", "Tallulah",
    "Thaddeus", "Theodora", "Tobiah", "Ulrika", "Valentina", "Wilhelmina", "Xiomara", "Yaroslav", "Yevgenia",
    "Zainab", "Zebedee", "Zofia", "Agnieszka", "Benedikt", "Clementine", "Desmond", "Evangeline", "Fionnuala",
    "Gulnara", "Horatio", "Ingeborg", "Jolanda", "Kasimir", "Lavinia", "Mordecai", "Nerissa", "Oswin",
    "Philippa", "Rasmus", "Svetlana", "Torvald", "Ursula", "Vasilisa", "Winifred", "Ximena", "Ysolde",
)  # fmt: skip
ADJECTIVES = (
    "amber", "ancient", "brass", "crimson", "dusty", "emerald", "faded", "gilded", "hollow", "ivory", "jade",
    "lacquered", "marble", "oaken", "quilted", "rusty", "silver", "tarnished", "velvet", "woven", "copper",
    "golden", "cracked", "enamelled",
)  # fmt: skip
OBJECTS = (
    "lantern", "compass", "teapot", "violin", "chessboard", "telescope", "music box", "hourglass", "harp",
    "kettle", "mirror", "sundial", "birdcage", "globe", "typewriter", "gramophone", "sextant", "chalice",
    "spinning wheel", "accordion", "rocking horse", "candelabra", "snow globe", "weather vane",
)  # fmt: skip
PLACES = (
    "Lisbon", "Kyoto", "Valparaiso", "Tromso", "Zanzibar", "Cusco", "Tbilisi", "Reykjavik", "Marrakesh",
    "Hobart", "Quebec", "Bergen", "Granada", "Odessa", "Lhasa", "Timbuktu", "Salzburg", "Galway", "Dubrovnik",
    "Samarkand", "Cartagena", "Nairobi", "Hanoi", "Oaxaca",
)  # fmt: skip
CONTAINERS = (
    "a cedar chest", "the cellar", "a locked drawer", "a tin box", "the bell tower", "a velvet pouch",
    "the old lighthouse", "a biscuit tin", "the attic", "a hatbox",
)  # fmt: skip
COLOURS = ("teal", "scarlet", "ochre", "violet", "lime green", "navy blue", "saffron", "charcoal grey")
ANIMALS = ("goose", "badger", "tortoise", "raven", "mastiff", "peacock", "ferret", "llama")
NEEDLE_TEMPLATES = (
    ("The {adj} {obj} of {place} is kept in {container}.", "Where is the {adj} {obj} of {place} kept?"),
    ("The {adj} {obj} of {place} was painted {colour} by {person}.",
     "What colour was the {adj} {obj} of {place} painted?"),
    ("In {place}, the {adj} {obj} is guarded by a {animal} called {person}.",
     "What guards the {adj} {obj} in {place}?"),
    ("The {adj} {obj} of {place} weighs exactly {number} grams.", "How much does the {adj} {obj} of {place} weigh?"),
)  # fmt: skip


@dataclass(frozen=True)
class Prose:
    """The haystack text as a ring of units (sentences or paragraphs) with separators and token counts."""

    text: str
    units: list[str]
    seps: list[str]  # seps[i] follows units[i]; the last one closes the ring
    tokens: list[int]  # content tokens of each unit (special tokens excluded)

    @classmethod
    def load(cls, counter: TokenCounter) -> Prose:
        from pydoc_data.topics import topics

        text = "\n\n".join(topics[k].strip() for k in sorted(topics))
        units, seps, cursor = [], [], 0
        for m in _BOUNDARY.finditer(text):
            if m.start() > cursor:
                units.append(text[cursor : m.start()])
                seps.append(m.group(0))
            cursor = m.end()
        units.append(text[cursor:])
        seps.append("\n\n")
        tokens = [n - counter.n_special for n in counter.count_many(units)]
        return cls(text, units, seps, tokens)

    def contains_word(self, word: str) -> bool:
        return re.search(rf"\b{re.escape(word)}\b", self.text) is not None

    def document(self, start: int, n_units: int, sentence: str, depth: int) -> str:
        """Units ``start .. start+n_units`` of the ring with ``sentence`` inserted before unit number ``depth``."""
        parts: list[str] = []
        for i in range(n_units):
            u = (start + i) % len(self.units)
            if i == depth:
                parts.append(sentence + " ")
            parts.append(self.units[u])
            if i < n_units - 1:
                parts.append(self.seps[u])
        if depth >= n_units:
            parts.append(" " + sentence)
        return "".join(parts)


def _fit(prose: Prose, counter: TokenCounter, start: int, length: int, sentence: str, rng: random.Random) -> str | None:
    """A document of ~``length`` tokens starting at unit ``start``, or ``None`` if no cut point fits."""
    target = length - counter.n_special
    total, best_n, best_gap = counter.count(sentence) - counter.n_special, 0, length
    n = 0
    while total <= target * (1 + FIT_TOLERANCE) and n < len(prose.units):
        total += prose.tokens[(start + n) % len(prose.units)]
        n += 1
        if abs(total - target) < best_gap:
            best_n, best_gap = n, abs(total - target)
    if best_n == 0:
        return None
    doc = prose.document(start, best_n, sentence, rng.randint(0, best_n))
    return doc if abs(counter.count(doc) - length) <= FIT_TOLERANCE * length else None


def _needle(fields: tuple[str, str, str], rng: random.Random) -> tuple[str, str]:
    """One templated (fact, question) pair about the (adjective, object, place) ``fields``."""
    adj, obj, place = fields
    fact, question = NEEDLE_TEMPLATES[rng.randrange(len(NEEDLE_TEMPLATES))]
    values = {
        "adj": adj, "obj": obj, "place": place, "container": rng.choice(CONTAINERS),
        "colour": rng.choice(COLOURS), "person": rng.choice(NAMES), "animal": rng.choice(ANIMALS),
        "number": str(rng.randint(100, 9999)),
    }  # fmt: skip
    return fact.format(**values), question.format(**values)


def _passkeys(prose: Prose, n: int, rng: random.Random) -> list[tuple[str, str]]:
    """``n`` (passkey sentence, query) pairs with distinct names and numbers, none of them in the prose."""
    names = rng.sample([name for name in NAMES if not prose.contains_word(name)], n)
    numbers: list[int] = []
    while len(numbers) < n:
        k = rng.randint(10000, 99999)
        if k not in numbers and str(k) not in prose.text:
            numbers.append(k)
    return [
        (f"{name}'s pass key is {k}. Remember it. {k} is the pass key for {name}.", f"what is the pass key for {name}?")
        for name, k in zip(names, numbers, strict=True)
    ]


def build_synthetic(
    task: str, counter: TokenCounter, *, small: bool = False, seed: int = 0
) -> tuple[list[Dataset], dict]:
    """One pool per length for ``task`` ("passkey" or "needle") and build info."""
    n_docs, n_queries = (20, 10) if small else (100, 50)
    prose = Prose.load(counter)
    datasets = []
    for length in SMALL_LENGTHS if small else LENGTHS:
        rng = random.Random(f"{task}:{seed}:{length}")
        if task == "passkey":
            pairs = _passkeys(prose, n_docs, rng)
        else:
            triples = [(a, o, p) for a in ADJECTIVES for o in OBJECTS for p in PLACES]
            pairs = [_needle(t, rng) for t in rng.sample(triples, n_docs)]
        used: set[int] = set()
        docs = []
        for i, (sentence, _) in enumerate(pairs):
            start, text = rng.randrange(len(prose.units)), None
            for _ in range(len(prose.units)):
                if start not in used and (text := _fit(prose, counter, start, length, sentence, rng)) is not None:
                    break
                start = (start + 1) % len(prose.units)
            if text is None:
                raise RuntimeError(f"no cut of the prose fits {length} tokens within {FIT_TOLERANCE:.0%}")
            used.add(start)
            docs.append(EvalDoc(f"{task}-{length}-d{i:03d}", text, None))
        queries, qrels = [], {}
        for j, i in enumerate(sorted(rng.sample(range(n_docs), n_queries))):
            qid = f"{task}-{length}-q{j:02d}"
            queries.append(EvalQuery(qid, pairs[i][1], f"len{length}"))
            qrels[qid] = {docs[i].doc_id}
        datasets.append(Dataset(f"{task}-{length}", docs, queries, qrels))
    return datasets, {"prose_units": len(prose.units), "prose_tokens": sum(prose.tokens)}
