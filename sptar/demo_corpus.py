"""A small made-up corpus for the "your own corpus" example: a plant care handbook.

``python -m sptar.demo_corpus data/own-example`` (``make own-example-corpus``) writes

- ``docs/<topic>/<plant>.md`` and ``.txt``: one short document per (plant, topic), from
  templates (Markdown files start with a ``# title`` line, text files have no title);
- ``examples.tsv``: ten labeled pairs (``query<TAB>doc_id``), as a user would write them.

Everything comes from the tables below and a seeded random generator: no third-party data,
the same files on every run. The facts are illustrative, not gardening advice.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from sptar.io.atomic import atomic_dir, atomic_write

# name, latin name, native region, group, one fact of its own
PLANTS = [
    ("boston fern", "Nephrolepis exaltata", "the tropical Americas", "foliage",
     "Its arching fronds shed small leaflets when the air is too dry."),
    ("basil", "Ocimum basilicum", "tropical Asia", "herb",
     "Pinching out the flower buds keeps the leaves sweet and the plant bushy."),
    ("rosemary", "Salvia rosmarinus", "the Mediterranean coast", "herb",
     "Its needle-like leaves hold resinous oils that perfume the hand that brushes them."),
    ("moth orchid", "Phalaenopsis amabilis", "Southeast Asia", "flowering",
     "Its aerial roots turn silvery when dry and green after watering."),
    ("aloe vera", "Aloe vera", "the Arabian peninsula", "succulent",
     "The gel inside its thick leaves is used to soothe minor burns."),
    ("snake plant", "Dracaena trifasciata", "West Africa", "succulent",
     "Its upright, banded leaves tolerate the dim corners of a room."),
    ("peace lily", "Spathiphyllum wallisii", "Colombia and Venezuela", "foliage",
     "It droops dramatically when thirsty and recovers within hours of a drink."),
    ("monstera", "Monstera deliciosa", "southern Mexico", "foliage",
     "Young leaves are solid; the famous holes appear as the plant matures."),
    ("golden barrel cactus", "Echinocactus grusonii", "central Mexico", "succulent",
     "Its golden spines form neat ribs around a round, slow-growing body."),
    ("tomato", "Solanum lycopersicum", "western South America", "flowering",
     "Removing the side shoots of cordon varieties directs energy into the fruit."),
    ("mint", "Mentha spicata", "Europe and western Asia", "herb",
     "Its runners spread so fast that many gardeners grow it in a sunken pot."),
    ("lavender", "Lavandula angustifolia", "the western Mediterranean", "herb",
     "Cutting it back after flowering stops the base from turning woody and bare."),
    ("pothos", "Epipremnum aureum", "French Polynesia", "foliage",
     "Its trailing vines can reach several metres indoors if left unpruned."),
    ("spider plant", "Chlorophytum comosum", "southern Africa", "foliage",
     "It sends out long stems carrying baby plantlets that root easily."),
    ("jade plant", "Crassula ovata", "South Africa", "succulent",
     "Its plump leaves store water and may blush red at the edges in strong sun."),
    ("rubber plant", "Ficus elastica", "northeast India", "foliage",
     "Its glossy leaves collect dust and breathe better after a wipe with a damp cloth."),
    ("fiddle leaf fig", "Ficus lyrata", "western Africa", "foliage",
     "It dislikes being moved and often drops leaves after a change of place."),
    ("rex begonia", "Begonia rex", "northeast India", "flowering",
     "Its patterned leaves come in silver, purple and deep red."),
    ("geranium", "Pelargonium zonale", "South Africa", "flowering",
     "Removing faded flower heads keeps new blooms coming until autumn."),
    ("parsley", "Petroselinum crispum", "the central Mediterranean", "herb",
     "It is a biennial: it flowers and sets seed in its second year, then dies."),
]

# per group: light, watering, soil and repotting, pests, propagation, feeding
GROUP_FACTS = {
    "succulent": {
        "light": ["a sunny windowsill with several hours of direct sun",
                  "bright light; a south-facing window suits it well"],
        "water": ["every two to three weeks, letting the soil dry out completely in between",
                  "sparingly, about once a month in winter and every two weeks in summer"],
        "soil": ["a gritty cactus mix with extra perlite or pumice",
                 "a free-draining mix of loam and coarse sand in a clay pot"],
        "pests": ["mealybugs, which hide as white cottony clusters where leaves meet the stem",
                  "scale insects, small brown bumps that can be scraped off with a fingernail"],
        "propagate": ["offsets separated from the mother plant and left to callus for a few days",
                      "leaf or stem cuttings dried for a week before potting in dry mix"],
        "feed": ["a diluted cactus fertiliser two or three times during the growing season",
                 "a low-nitrogen feed once in spring and once in midsummer"],
    },
    "herb": {
        "light": ["full sun for at least six hours a day",
                  "the brightest spot available; on a windowsill turn the pot every few days"],
        "water": ["whenever the top two centimetres of soil feel dry",
                  "deeply but not too often, letting excess water drain away"],
        "soil": ["a light, well-drained loam with some compost mixed in",
                 "a multipurpose compost with added grit for drainage"],
        "pests": ["aphids, which cluster on soft shoot tips and leave sticky honeydew",
                  "whiteflies, tiny white insects that rise in a cloud when the plant is touched"],
        "propagate": ["seed sown in spring on the surface of moist compost",
                      "softwood cuttings taken in early summer and rooted in a glass of water"],
        "feed": ["a liquid seaweed feed every two weeks in summer",
                 "little feeding at all; rich soil makes the flavour weaker"],
    },
    "foliage": {
        "light": ["bright, indirect light away from scorching midday sun",
                  "medium light; it tolerates a north-facing window but grows slowly there"],
        "water": ["when the top three centimetres of the potting mix are dry, roughly weekly",
                  "evenly, keeping the mix moist but never waterlogged"],
        "soil": ["a chunky mix of peat-free compost, orchid bark and perlite",
                 "a rich, airy potting mix repotted every two years in spring"],
        "pests": ["spider mites, which leave fine webbing and speckled yellow leaves",
                  "thrips, slender insects that scar leaves with silvery streaks"],
        "propagate": ["stem cuttings with at least one node, rooted in water or moss",
                      "division of the root ball when repotting in spring"],
        "feed": ["a balanced liquid fertiliser once a month from spring to autumn",
                 "a half-strength houseplant feed every other watering in the growing season"],
    },
    "flowering": {
        "light": ["bright light with some morning sun to set flower buds",
                  "plenty of light but shade from the hottest afternoon sun"],
        "water": ["once the surface has dried, watering at the base to keep flowers dry",
                  "regularly in the growing season; uneven watering causes bud drop"],
        "soil": ["a loose, open mix that lets air reach the roots",
                 "a fertile, moisture-retentive compost in a pot with drainage holes"],
        "pests": ["fungus gnats, whose larvae live in wet compost",
                  "powdery mildew, a white dusty coating on leaves in stagnant air"],
        "propagate": ["tip cuttings taken in late summer and kept in a warm propagator",
                      "seed started indoors eight weeks before the last frost"],
        "feed": ["a high-potash feed weekly once the first flowers open",
                 "a bloom fertiliser every two weeks while it is flowering"],
    },
}

TOPICS = {  # folder: (title template, body template, example query templates)
    "light": ("Light for the {name}",
              "The {name} ({latin}), native to {origin}, grows best in {light}. Too little light "
              "makes it leggy and pale; too much can bleach or burn the leaves. {note}",
              ["how much sun does {a_name} need", "can i keep {a_name} in a dark room"]),
    "watering": ("Watering the {name}",
                 "Water {a_name} {water}. Overwatering is the most common way to lose "
                 "{a_name}: soggy roots rot and the leaves yellow. Use water at room temperature. "
                 "{note}",
                 ["how often should i water {a_name}", "{name} yellow leaves too much water"]),
    "soil": ("Soil and repotting: {name}",
             "Plant {a_name} in {soil}. Repot when roots circle the pot or grow out of the "
             "drainage holes, moving up only one pot size. {note}",
             ["best potting mix for {name}", "when to repot {a_name}"]),
    "pests": ("Pests and problems of the {name}",
              "The {name} is most often troubled by {pests}. Check the undersides of leaves "
              "regularly and isolate an affected plant. Wiping or rinsing the leaves removes many "
              "pests before they spread. {note}",
              ["bugs on my {name}", "how to get rid of pests on {name}"]),
    "propagation": ("Propagating the {name}",
                    "New {name} plants ({latin}) are easiest to raise from {propagate}. Keep "
                    "young plants warm and out of direct sun until they root. {note}",
                    ["how to propagate {name}", "can you grow {name} from cuttings"]),
    "feeding": ("Feeding the {name}",
                "Give {a_name} {feed}. Stop feeding in winter, when growth slows, and never "
                "feed a plant whose soil is bone dry. {note}",
                ["what fertiliser for {name}", "how often to feed {a_name}"]),
}
FACT_OF_TOPIC = {"light": "light", "watering": "water", "soil": "soil", "pests": "pests",
                 "propagation": "propagate", "feeding": "feed"}


def slug(name: str) -> str:
    return name.replace(" ", "-")


def with_article(name: str) -> str:
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def documents(n_plants: int | None = None, seed: int = 0) -> dict[str, tuple[str, str]]:
    """``{relative path: (title, text)}``: one document per (plant, topic), Markdown with a
    title or plain text without one, alternately."""
    rng = random.Random(seed)
    docs = {}
    for plant, (name, latin, origin, group, note) in enumerate(PLANTS[:n_plants]):
        facts = {key: rng.choice(options) for key, options in GROUP_FACTS[group].items()}
        for number, (topic, (title, body, _)) in enumerate(TOPICS.items()):
            values = {"name": name, "a_name": with_article(name), "latin": latin, "origin": origin, "note": note,
                      FACT_OF_TOPIC[topic]: facts[FACT_OF_TOPIC[topic]]}
            ext = ".md" if (plant + number) % 2 == 0 else ".txt"
            docs[f"{topic}/{slug(name)}{ext}"] = (title.format(**values) if ext == ".md" else "",
                                                  body.format(**values))
    return docs


def examples(docs: dict[str, tuple[str, str]], n: int = 10, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (query, doc id) pairs: a query a person might type, for a random document."""
    rng = random.Random(seed + 1)
    chosen = rng.sample(sorted(docs), n)
    pairs = []
    for doc_id in chosen:
        topic, file = doc_id.split("/")
        name = file.rsplit(".", 1)[0].replace("-", " ")
        query = rng.choice(TOPICS[topic][2])
        pairs.append((query.format(name=name, a_name=with_article(name)), doc_id))
    return pairs


def write(folder: str | Path, n_plants: int | None = None, n_examples: int = 10,
          seed: int = 0) -> tuple[int, int]:
    """Write ``docs/`` and ``examples.tsv`` under ``folder``; return (documents, examples)."""
    folder = Path(folder)
    docs = documents(n_plants, seed)
    with atomic_dir(folder / "docs") as tmp:
        for path, (title, text) in docs.items():
            target = tmp / path
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(target) as handle:
                handle.write(f"# {title}\n\n{text}\n" if title else f"{text}\n")
    pairs = examples(docs, n_examples, seed)
    with atomic_write(folder / "examples.tsv") as handle:
        handle.write("query\tdoc_id\n")
        handle.writelines(f"{query}\t{doc_id}\n" for query, doc_id in pairs)
    return len(docs), len(pairs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="where to write docs/ and examples.tsv")
    parser.add_argument("--plants", type=int, default=None, help="only the first N plants")
    parser.add_argument("--examples", type=int, default=10, help="labeled pairs to write")
    args = parser.parse_args(argv)
    n_docs, n_pairs = write(args.folder, args.plants, args.examples)
    sys.stdout.write(f"{args.folder}: {n_docs} documents in docs/, {n_pairs} labeled pairs in"
                     " examples.tsv\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
