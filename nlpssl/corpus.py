"""The built-in corpus: seeded, procedurally generated English stories and a labelled companion set.

Users with no network still need something to pretrain on, so the package writes its own text.
A story is one line: sentences that introduce a child (by name), a treasured object ("a shiny red
kite"), often a pet, then a small plot (lost and found, a trip, baking, a contest, a new friend, a
garden) in which a bad event makes the child feel one of many negative words and a good event one
of many positive words, before the ending refers back to the name and the object. Long-range
references and many synonyms mean a model must learn words in context, not memorise templates.

Fixed facts of the world make the demos well posed:

* a cat only ever sits on the mat ("The cat sat on the mat."); other pets sit elsewhere (dog: rug);
* about two stories in three open with "Once upon a time, ...".

`labelled_examples` draws short snippets (not copies of stories) from the same world, labelled
with the child's mood. The label words come from synonym sets and events whose polarity is only
learnable from the stories' contexts, plus negation ("was not glad"), so pretraining helps a
small fine-tuning budget.

Speed: sentences are `str.format_map` templates over one dict of slots drawn per story, so a
story costs a few dozen random draws and a dozen formats (`benchmarks/corpus_speed.py`: about
15-20 MB/s on one CPU core).

Only the standard library is imported here: `nlpssl --help` must stay instant.
"""

# Word lists are whitespace-separated strings on purpose: ~2,000 quoted list items would triple the
# lexicon's length and make it hard to read and extend.
# ruff: noqa: SIM905

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = [
    "DEFAULT_NUM_STORIES",
    "LABELS",
    "CorpusStats",
    "corpus_stats",
    "generate_stories",
    "labelled_examples",
]

# 50k stories (~25 MB, a few seconds to generate) clear the diversity targets (>= 2,000 word types,
# >= 200,000 distinct sentences) with margin; tests/test_corpus.py asserts the figures at this size.
DEFAULT_NUM_STORIES = 50_000

LABELS: tuple[str, ...] = ("negative", "positive")

# ---------------------------------------------------------------------------------------------
# Lexicons. Whitespace-separated strings keep ~2,000 words readable; everything is lowercase
# except proper names. Names that are also emotion words (Joy, Hope) are left out on purpose, so
# that a mood word always means a mood.
# ---------------------------------------------------------------------------------------------

_GIRLS = """Mia Emma Lily Ava Sophie Grace Chloe Ella Ruby Lucy Anna Rosie Daisy Holly Molly Poppy
Amy Zoe Isla Evie Alice Clara Hannah Leah Maya Nora Olivia Sara Tara Jess Kate Laura Megan Amber
Bella Eva Freya Hazel Ivy Jade Lola Luna Maisie Nina Paige Rose Sienna Tilly Violet Willow Abby
Beth Cara Dora Elsie Fiona Gemma Heidi Iris Julia Kira Lena Mabel Nell Olive Pippa Rita Stella
Tess Vera Wendy Yara Zara Ada Bea Cora Edith Fern Greta Ingrid Kim Lara Mina Nadia Penny Quinn
Rhea Sally Tina Uma Wren Alma Dina Esme Flora Gwen Ida Jenny Lottie Matilda Nancy Polly Rachel
Susie Thea Amelia Harriet Agnes Bonnie Carla Ellie Frida Annie Belle Cleo Delia Elena Faye Gina
Helen Imogen Josie Katie Lucia Marnie Orla Petra Rosa Selma Tamsin Ursula Vicky Winnie Xena Yvonne
Zelda Martha Phoebe Lydia Mavis Norah Odette Peggy Ramona Sylvie""".split()

_BOYS = """Tom Ben Sam Leo Jack Oliver Harry Charlie George Noah Jacob Alfie Oscar Henry Archie
Theo Finn Luke Adam Dan Eli Felix Gus Hugo Ivan Jake Kai Liam Milo Ned Owen Pete Ravi Seth Toby
Will Zack Alex Bob Carl Dexter Ethan Frank Gabe Harvey Ian Joel Kevin Leon Mark Nathan Otto Paul
Rory Simon Ted Victor Wes Arthur Billy Caleb Dylan Edgar Fred Grant Hank Isaac Jonah Karl Louis
Mason Nico Ollie Percy Reuben Stan Tristan Vince Walter Aaron Bruno Colin Derek Emil Fergus Glen
Hector Jasper Kieran Lewis Martin Neil Rufus Sid Troy Ryan Joe Tim Nick Ross Dean Elliot Miles
Sean Ralph Abe Barney Cedric Duncan Angus Boris Amos Bertie Cyril Desmond Ernest Floyd Gordon
Horace Jude Kenny Lionel Magnus Norman Oswald Quentin Roland Silas Timothy Umar Vernon Warren
Yusuf Zane Albert Benny Clive Donald Eddie Gilbert Humphrey""".split()

_PET_NAMES = """Biscuit Pepper Whiskers Sparky Buttons Muffin Patch Ginger Coco Shadow Bubbles
Pickles Noodle Pip Fluffy Socks Tiger Smudge Peanut Rusty Bramble Toffee Nutmeg Mittens Scout
Ziggy Bingo Domino Fudge Marble Nibbles Puddle Skippy Tinker Waffles Zippy Bean Clover Dusty
Freckles Goldie Misty Pogo Sprout Twiggy Button Pudding Sooty Snowy Bandit Acorn Blossom Champ
Echo Fidget Gizmo Hoppy Jinx Kipper Lucky Mango Nugget Paws Rascal Skittles Truffle Wiggles Yogi
Zorro Sherbet Crumble Dumpling Flopsy Pumpkin Radish Sprinkles Teacup""".split()

# Town names are compounds of English roots ("Oakford", "Millbrook"): hundreds of word types that
# still look like English place names.
_TOWN_HEADS = """Oak Elm Ash Birch Pine Willow Mill Stone Green Fair Red White Black Cold Long
High North South East West Bright Clear Deer Fox Maple Silver Thorn Wolf Bram Apple Bell Cherry
Honey""".split()
_TOWN_TAILS = (
    "ford field wood ton bury dale hill brook ham well stead moor vale bridge port haven".split()
)
_TOWNS = [head + tail for head in _TOWN_HEADS for tail in _TOWN_TAILS if head.lower() != tail]

_TRAITS = """kind brave clever curious shy gentle busy friendly funny quiet polite helpful clumsy
careful bold smart silly sleepy tidy messy patient lively playful generous thoughtful daring wise
noisy sporty dreamy eager creative caring little young honest adventurous""".split()

# Pets and the one place each pet sits. The cat/mat pair is the fill-mask demo's fact of the world.
_PET_SEATS = {
    "cat": ("mat", "purred"),
    "dog": ("rug", "barked"),
    "rabbit": ("cushion", "twitched its nose"),
    "hamster": ("shelf", "squeaked"),
    "parrot": ("perch", "squawked"),
    "tortoise": ("rock", "blinked"),
    "pony": ("hay", "neighed"),
    "puppy": ("blanket", "yapped"),
    "goat": ("wall", "bleated"),
    "duck": ("pond", "quacked"),
    "mouse": ("windowsill", "sniffed"),
    "lizard": ("stone", "yawned"),
}
# The cat is drawn far more often than any other pet so that "The cat sat on the mat." is frequent.
_PETS = ["cat"] * 8 + ["dog"] * 3 + [p for p in _PET_SEATS if p not in ("cat", "dog")]

_WILD = """fox deer owl badger hedgehog squirrel hare mole otter beaver frog toad goose swan robin
sparrow crow magpie pigeon bee butterfly ladybird snail spider ant beetle moth bat wolf bear horse
cow sheep pig hen chicken donkey lamb eagle hawk heron kingfisher seal crab whale dolphin turtle
lion tiger elephant giraffe monkey zebra penguin camel kangaroo koala panda squid lobster peacock
flamingo raven vole shrew newt salmon trout pelican parrot ostrich rhino hippo gorilla leopard
cheetah buffalo moose reindeer walrus octopus jellyfish starfish""".split()

_OBJECTS = """kite ball hat book drum doll boat train car scarf umbrella lantern box bucket spade
shell whistle flute violin guitar trumpet robot puzzle balloon bell basket blanket cup mug bowl
spoon clock watch compass map key ring necklace bracelet crown wand sword shield teapot jar bottle
candle lamp pillow quilt rope ladder wagon sled scooter skateboard paintbrush pencil crayon
notebook diary letter postcard stamp coin button ribbon feather pebble acorn pinecone jumper coat
boot glove mitten sock bag backpack purse wallet camera telescope globe trophy medal badge sticker
card ticket jigsaw rattle harmonica tambourine xylophone banjo kazoo hoop frisbee racket helmet
apron shoe sandal mirror comb brush fan flag tent hammock net raft canoe bicycle marble puppet
banner bench barrel bead brooch candlestick chest cushion envelope flask goblet hammer
handkerchief hourglass kettle locket mask medallion nest ornament paddle parcel picture plate
pouch rocket saddle satchel shovel sieve statue stool suitcase tablecloth thimble trinket trunk
tray tuba vase wheelbarrow windmill""".split()

_OBJ_ADJS = """big small tiny shiny old new soft fancy lovely pretty strange funny magic lucky
special bright heavy light smooth bumpy fluffy sparkly wobbly squeaky noisy tall short long round
square striped spotted plain dusty clean precious little huge giant wooden woollen paper silk
velvet plastic metal glass painted patterned handmade secret curly dainty enormous fuzzy glossy
gleaming knitted lumpy mossy polished rusty shabby slippery smelly speckled spiky sturdy tatty
tinkly twinkly velvety""".split()

_COLOURS = """red blue green yellow orange purple pink white black brown grey golden silver
crimson scarlet turquoise lilac cream ivory indigo maroon teal""".split()

# Mood words. Stories put them after bad/good events, so their polarity is learnable from context;
# the labelled set leans on them, which is what makes pretraining pay off in fine-tuning.
_POSITIVE = """happy glad cheerful joyful delighted thrilled pleased excited proud content
overjoyed merry jolly elated grateful hopeful ecstatic jubilant gleeful blissful chirpy upbeat
radiant carefree""".split()
_NEGATIVE = """sad unhappy gloomy miserable upset sorrowful glum downcast heartbroken dejected
forlorn crestfallen despondent disheartened woeful tearful disappointed grumpy cross annoyed
frustrated lonely worried troubled""".split()

_PLACES = """park river forest lake beach garden market library school farm meadow hill village
harbour bakery castle zoo pond field orchard playground station museum cave bridge valley island
woods seaside mountain barn stream shop fair circus square mill lighthouse greenhouse stable pier
cliff marsh dairy pasture quarry riverbank canal cathedral chapel theatre cinema aquarium
bandstand boathouse campsite hilltop""".split()

_SPOTS = (
    "under the bench",
    "under the bed",
    "under the table",
    "under a bush",
    "under the stairs",
    "under the sofa",
    "behind the shed",
    "behind the door",
    "behind the curtain",
    "behind the fence",
    "behind the barn",
    "beside the gate",
    "beside the well",
    "near the pond",
    "near the fountain",
    "in the long grass",
    "in the hedge",
    "in the sandpit",
    "in the attic",
    "in the cupboard",
    "in a drawer",
    "in the wardrobe",
    "on the roof",
    "up a tall tree",
    "under a pile of leaves",
    "inside an old boot",
    "next to the swings",
    "by the river bank",
    "among the flowers",
    "beneath the bridge",
)

_FOODS = """cake pie muffin cookie
biscuit bun scone tart pancake waffle sandwich apple pear plum peach banana orange cherry
strawberry lemon melon carrot potato tomato pumpkin pizza pretzel doughnut cupcake crumpet bagel
pudding cracker turnip radish onion walnut hazelnut grape apricot raspberry blueberry blackberry
gooseberry mango kiwi lime parsnip cabbage cauliflower lettuce sausage pastry dumpling flapjack
meringue macaroon toffee fig date""".split()
_FOOD_ADJS = (
    "warm fresh sweet tasty yummy crunchy juicy hot sticky delicious crispy soft golden".split()
)
# "An apple pie", "a plum crumble": flavour x dish gives many distinct, natural baking sentences.
_FLAVOURS = """apple cherry lemon plum peach pear banana carrot pumpkin strawberry orange honey
chocolate ginger raspberry apricot walnut coconut""".split()
_DISHES = "pie cake tart pudding loaf crumble muffin".split()

_RELATIVES = "mother father mum dad grandma grandpa granny aunt uncle brother sister cousin".split()
_JOBS = """baker farmer teacher doctor nurse builder painter sailor pilot gardener tailor
carpenter potter miller shepherd vet cook chef dentist driver singer dancer writer librarian
mechanic plumber clockmaker beekeeper shopkeeper firefighter astronaut blacksmith weaver jeweller
fisher acrobat artist architect banker butcher cobbler drummer engineer florist grocer inventor
juggler magician mayor musician optician poet porter printer ranger scientist sculptor zookeeper
""".split()
# (base form, past tense) of things children like to do.
_ACTS = [
    tuple(pair.split("/"))
    for pair in """
sing/sang dance/danced paint/painted draw/drew read/read write/wrote swim/swam run/ran
jump/jumped climb/climbed skip/skipped bake/baked cook/cooked knit/knitted sew/sewed
fish/fished hum/hummed whistle/whistled skate/skated sail/sailed row/rowed hike/hiked
build/built explore/explored juggle/juggled dig/dug play/played garden/gardened splash/splashed
giggle/giggled race/raced chat/chatted wander/wandered yodel/yodelled doodle/doodled
tumble/tumbled whirl/whirled twirl/twirled march/marched stroll/strolled paddle/paddled
carve/carved sketch/sketched
""".split()
]
_FLOWERS = """rose daisy tulip lily poppy bluebell buttercup sunflower daffodil violet primrose
lavender dandelion orchid marigold pansy snowdrop crocus heather iris foxglove cornflower clover
thistle honeysuckle jasmine""".split()
_TREES = """oak elm ash birch pine willow maple beech cedar chestnut fir hazel holly larch poplar
rowan yew sycamore hawthorn alder aspen linden walnut plum magnolia""".split()
_VEGETABLES = """carrot potato turnip radish onion cabbage lettuce parsnip bean pea leek beetroot
marrow squash courgette spinach kale celery sweetcorn broccoli""".split()
_PESTS = "slug snail caterpillar rabbit pigeon beetle mole weevil grasshopper crow".split()
_TOOLS = "trowel rake hoe spade fork shears hosepipe wheelbarrow bucket".split()
# How a child walks somewhere, and how: neutral words, so they carry no mood.
_WALKS = """walked skipped tiptoed marched wandered hurried strolled trudged dashed hopped ambled
jogged plodded scampered""".split()
_ADVERBS = """quickly slowly carefully quietly softly gently calmly bravely briskly steadily
lazily boldly silently cautiously""".split()
_WEATHER = "sunny rainy windy snowy foggy cloudy frosty stormy warm cold bright chilly".split()
_TIMES = "morning afternoon evening".split()
_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
_SEASONS = "spring summer autumn winter".split()
_NUMBERS = "two three four five six seven eight nine ten eleven twelve".split()
_CONTESTS = (
    "race", "singing contest", "painting contest", "spelling contest", "baking contest",
    "sandcastle contest", "talent show", "dancing contest", "kite contest", "swimming race",
)  # fmt: skip

_IRREGULAR_PLURALS = {
    "deer": "deer", "sheep": "sheep", "mouse": "mice", "wolf": "wolves", "goose": "geese",
    "squid": "squid", "potato": "potatoes", "tomato": "tomatoes", "scarf": "scarves",
    "loaf": "loaves",
}  # fmt: skip

# Pronoun slots per gender: he, He, his, His, him, himself, child noun.
_PRONOUNS = {
    "girl": ("she", "She", "her", "Her", "her", "herself", "girl"),
    "boy": ("he", "He", "his", "His", "him", "himself", "boy"),
}


def _plural(noun: str) -> str:
    """English plural of a one-word noun (regular rules plus a small irregular table)."""
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _a(phrase: str) -> str:
    """Prefix the right indefinite article: "an orange kite", "a red kite", "a unicorn"."""
    vowel_sound = phrase[0] in "aeiou" and not phrase.startswith(("uni", "use", "eu"))
    return ("an " if vowel_sound else "a ") + phrase


# Precomputed once at import (a few thousand strings, cheap) so the per-story loop does no string
# logic.
_A_TRAITS = {t: _a(t) for t in _TRAITS}
_WILD_PLURALS = {w: _plural(w) for w in _WILD}
_FOOD_PLURALS = {f: _plural(f) for f in _FOODS}
_FLOWER_PLURALS = [_plural(f) for f in _FLOWERS]
_OBJECT_PLURALS = [_plural(o) for o in _OBJECTS]

# ---------------------------------------------------------------------------------------------
# Sentence templates. Every slot in braces is filled from the dict that `_draw_slots` returns, so
# one story keeps one child, one friend, one object and one pet from its first sentence to its last.
# ---------------------------------------------------------------------------------------------

_ONCE = "Once upon a time, "
_OPEN = (
    _ONCE + "there was {a_trait} {kid} named {Name}.",
    _ONCE + "there was {a_trait} {kid} called {Name} who lived in {town}.",
    _ONCE + "in the town of {town}, there lived {a_trait} {kid} named {Name}.",
    _ONCE + "{a_trait} {kid} named {Name} lived near the {place2}.",
    "One {weather} {time}, {a_trait} {kid} named {Name} woke up early.",
    "{Name} was {a_trait} {kid} who lived in {town}.",
)
_HOME = (
    "{He} lived with {his} {rel} in a small house near the {place2}.",
    "{His} {rel} was {a_job} in {town}.",
    "Every {day}, {Name} helped {his} {rel} at the {place2}.",
)
_HOBBY = ("{Name} loved to {act}.", "{He} liked to {act} in the {season}.")
_OBJ = (
    "{Name} had {a_obj}.",
    "{He} had {a_obj} that {he} loved very much.",
    "{His} {rel} gave {him} {a_obj} for {his} birthday.",
    "{Name}'s favourite thing in the world was {a_obj}.",
)
# Introducing a pet always comes with where it sits, so the cat/mat fact is seen in every cat story.
_PET_INTRO = (
    "{He} also had a pet {pet} called {petname}.",
    "{Name} lived with {a_pet} named {petname}.",
)
_PET_SIT = (
    "The {pet} sat on the {seat}.",
    "The {pet} sat on the {seat}.",
    "Every {time}, the {pet} sat on the {seat}.",
    "{petname} the {pet} sat on the {seat} and {sound}.",
)
_PET = tuple(f"{intro} {sit}" for intro in _PET_INTRO for sit in _PET_SIT)

# Mood beats. "felt {neg1}" and "felt {pos1}" share their wording: only the events before them tell
# the two synonym sets apart, which is the signal pretraining is meant to pick up.
_FEEL_BAD = (
    "{Name} felt {neg1}.",
    "{He} was very {neg1}.",
    "{Name} was not {pos1} at all.",
    "{He} sat down and cried, feeling {neg1} and {neg2}.",
    "Poor {Name} was so {neg1}.",
    "{Name} felt {neg1} and did not want to {act}.",
)
_FEEL_GOOD = (
    "{Name} felt {pos1}.",
    "{He} was so {pos1}.",
    "{Name} was not {neg1} anymore.",
    "{He} smiled, feeling {pos1} and {pos2}.",
    "{Name} laughed and felt {pos1}.",
    "{Name} was {pos1} and wanted to {act} all day.",
)
# Optional scenery between the setup and the trouble: more words, no mood.
_SCENE = (
    "{Name} {walked} {adverb} past the {place2}.",
    "{Name} {walked} {adverb} under the {tree} trees.",
    "A cool breeze blew over {town}, and the {flowers} swayed.",
    "Somewhere in the {tree} trees, {a_wild} was watching.",
    "In a shop window, {Name} saw {num} {shop_adj} {shop_items}.",
    "{Name} stopped to smell {a_flower} by the gate.",
    "{His} {rel} bought {him} {a_snack} at the {place2}.",
)
# A callback to the treasured object late in the story: the long-range reference a model must track.
_KEEPSAKE = (
    "All the while, {Name} kept the {obj} close.",
    "{Name} looked at the {obj} and thought about the day.",
    "That night, the {obj} lay on the shelf by {his} bed.",
    "{He} showed the {obj} to {his} {rel}.",
)
_THE_END = ("The end.",)


@dataclass(frozen=True)
class _Plot:
    """One plot family: setup, a bad event, an optional middle, a good event, an ending."""

    setup: tuple[str, ...]
    bad: tuple[str, ...]
    middle: tuple[str, ...]
    good: tuple[str, ...]
    end: tuple[str, ...]


_PLOTS = (
    _Plot(  # lost and found: the object introduced at the start must be found again
        setup=(
            "One day, {Name} took the {obj} to the {place}.",
            "One {weather} {time}, {Name} went to the {place} with the {obj}.",
            "On {day}, {Name} and {his} {rel} walked to the {place}, and {Name} brought the {obj}.",
            "One {season} day, {Name} carried the {obj} all the way to the {place}.",
        ),
        bad=(
            "But the wind blew the {obj} away.",
            "Sadly, {Name} lost the {obj} somewhere near the {place}.",
            "Then {a_wild} ran off with the {obj}.",
            "But {Name} dropped the {obj}, and it rolled out of sight.",
            "When {he} looked around, the {obj} was gone.",
        ),
        middle=(
            "Just then, {his} friend {friend} came along and helped {him} look for the {obj}.",
            "Then {a_ftrait} {fkid} named {friend} came by and asked what was wrong.",
            "{friend}, who lived in {town}, saw {Name} and came over to help.",
            "{Name} and {friend} looked for the {obj} everywhere.",
        ),
        good=(
            "At last, they found the {obj} {spot}.",
            "Soon {friend} spotted the {obj} {spot}.",
            "Then {Name} saw the {obj} {spot}.",
            "Finally, {friend} found the {obj} {spot} and gave it back to {Name}.",
        ),
        end=(
            "{He} thanked {friend}, and they played with the {obj} all afternoon.",
            "From that day on, {Name} never lost the {obj} again.",
            "From that day on, {Name} and {friend} were best friends.",
            "That night, {Name} went to bed with the {obj} beside {him}.",
            "{Name} kept the {obj} safe forever.",
        ),
    ),
    _Plot(  # a trip: scenery words (wild animals, trees, flowers, jobs) live here
        setup=(
            "One {season} {time}, {Name} and {his} {rel} went on a trip to {town2}.",
            "On {day}, {Name} took the train to {town2} to visit {his} {rel}.",
            "One {weather} {day}, {Name} and {friend} set off for the {place2} near {town2}.",
        ),
        bad=(
            "Then dark clouds came, and it began to rain.",
            "But the train to {town2} was late, and they had to wait for hours.",
            "But when they got there, the {place} was closed.",
            "Then {Name} slipped in the mud and tore {his} coat.",
        ),
        middle=(
            "On the way, they saw {num} {wilds} by the {place2}.",
            "Along the road, {Name} saw {a_wild} near a tall {tree} tree.",
            "{Name} picked some {flowers} for {his} {rel}.",
            "They passed {a_job} who was busy near the {place2}.",
            "{Name} held the {obj} tightly all the way.",
        ),
        good=(
            "Then the sun came out again.",
            "Then a kind {job} showed them a secret path to the {place}.",
            "Then they found a little shop that sold {food_adj} {foods}.",
            "Soon the rain stopped, and a rainbow shone over {town2}.",
        ),
        end=(
            "They ate {num} {foods} and watched the {wilds} play.",
            "Back home, {Name} put the {obj} away and told {his} {rel} all about {town2}.",
            "That evening, {Name} drew a picture of {town2} for {his} {rel}.",
            "It was the best trip {Name} had ever had, and the {obj} came home safe too.",
        ),
    ),
    _Plot(  # baking
        setup=(
            "One {time}, {Name} decided to bake {a_bake} for {friend}.",
            "On {day}, {Name} and {his} {rel} baked {a_bake} for the fair in {town}.",
            "{Name} wanted to make {a_bake}, so {he} got out the flour and the eggs.",
        ),
        bad=(
            "But {he} forgot about it, and the {bake} burned in the oven.",
            "But {Name} dropped the {bake} on the kitchen floor.",
            "But the {bake} came out flat and hard.",
        ),
        middle=(
            "{Name} looked at the mess and then at {his} {obj}.",
            "{His} {rel} came into the kitchen to see what had happened.",
        ),
        good=(
            "{His} {rel} helped {him} bake a new one, and it was perfect.",
            "So {Name} tried again, and this time the {bake} came out golden and sweet.",
            "Then {friend} brought {num} {food_adj} {foods} to share.",
        ),
        end=(
            "{Name} and {friend} shared the {bake} by the {place2}.",
            "Everyone in {town} said it was the best {bake} they had ever tasted.",
            "After that, {Name} baked {a_bake} every {day}.",
            "{Name} put the last piece of {bake} on a plate next to the {obj}.",
        ),
    ),
    _Plot(  # a contest
        setup=(
            "One {day}, there was a {contest} at the {place} in {town}.",
            "{Name} wanted to win the {contest} at the {place}, so {he} practised every {time}.",
            "One {day}, {Name} took the {obj} to the {contest} at the {place} for luck.",
        ),
        bad=(
            "But on the big day, {Name} tripped and came last.",
            "But {Name} forgot what to do and came last.",
            "But {Name} was too nervous and did not win anything.",
        ),
        middle=(
            "{Name} held the {obj} tightly and looked at the ground.",
            "{His} {rel} gave {him} a big hug and handed {him} the {obj}.",
        ),
        good=(
            "Then the judge gave {Name} a special prize for trying so hard.",
            "The next year, {Name} tried again and won first prize.",
            "Then {his} friend {friend} gave {Name} a shiny medal that {fhe} had made by hand.",
        ),
        end=(
            "{Name} put the prize next to the {obj} on {his} shelf.",
            "From then on, {Name} practised with {friend} every {day}, with the {obj} close by.",
        ),
    ),
    _Plot(  # a new friend
        setup=(
            "{Name} had just moved to {town2}, and {he} did not know anyone there.",
            "At the new school in {town2}, nobody played with {Name}.",
        ),
        bad=(
            "Every day, {he} sat alone by the {place2}.",
            "The other children laughed at {Name}'s {obj}.",
        ),
        middle=("One day, {he} took the {obj} to the {place}.",),
        good=(
            "There, {he} met {a_ftrait} {fkid} named {friend}, who liked to {act} too.",
            "Then {friend} asked {Name} to come and {act} with {fhim}.",
        ),
        end=(
            "From that day on, {Name} and {friend} were best friends.",
            "Soon {Name} and {friend} {acted} together every {day}.",
            "From that day on, {Name} and {friend} shared the {obj} and everything else.",
        ),
    ),
    _Plot(  # a vegetable garden
        setup=(
            "One {season}, {Name} planted {veg} seeds in {his} {rel}'s garden.",
            "{Name} and {his} {rel} dug a little vegetable patch and planted {veg} seeds.",
        ),
        bad=(
            "But a hungry {pest} ate all the young {veg} plants.",
            "But a hailstorm flattened every {veg} plant in the patch.",
            "But there was no rain for weeks, and the {veg} plants began to wilt.",
        ),
        middle=(
            "{Name} dug the soil again with a little {tool}.",
            "{His} {rel} showed {him} how to use the {tool}.",
            "{Name} hung the {obj} on the fence to keep the birds away.",
        ),
        good=(
            "Then the rain came, and the {veg} plants grew tall and green.",
            "{friend} brought some new {veg} seeds, and this time they grew.",
            "Weeks later, {Name} pulled up the biggest {veg} in {town}.",
        ),
        end=(
            "That night, the whole family ate {veg} soup.",
            "{Name} gave the best {veg} to {his} friend {friend}, and {friend} admired the {obj}.",
            "{Name} took the biggest {veg} to the show in {town} and won a ribbon.",
        ),
    ),
)


def _story_beats(plot: _Plot) -> tuple[tuple[float, tuple[str, ...]], ...]:
    """The beats of one story with this plot, as (probability of appearing, templates)."""
    return (
        (1.0, _OPEN),
        (0.6, _HOME),
        (0.4, _HOBBY),
        (1.0, _OBJ),
        (0.55, _PET),
        (1.0, plot.setup),
        (0.35, _SCENE),
        (1.0, plot.bad),
        (1.0, _FEEL_BAD),
        (0.8, plot.middle),
        (1.0, plot.good),
        (1.0, _FEEL_GOOD),
        (0.6, _KEEPSAKE),
        (1.0, plot.end),
        (0.25, _THE_END),
    )


_STORY_BEATS = tuple(_story_beats(plot) for plot in _PLOTS)
_NAMES = {"girl": _GIRLS, "boy": _BOYS}


def _two(rng: random.Random, words: list[str]) -> tuple[str, str]:
    """Two different words from `words` (for "feeling glad and merry" without "glad and glad")."""
    n = len(words)
    i = int(rng.random() * n)
    j = (i + 1 + int(rng.random() * (n - 1))) % n
    return words[i], words[j]


def _draw_slots(rng: random.Random) -> dict[str, str]:
    """Draw the cast and props of one story: every template slot, filled once."""
    c = rng.choice
    gender, fgender = c(("girl", "boy")), c(("girl", "boy"))
    name, friend = c(_NAMES[gender]), c(_NAMES[fgender])
    if friend == name:  # two children with one name would break the references
        names = _NAMES[fgender]
        friend = names[(names.index(name) + 1) % len(names)]
    he, He, his, His, him, self, kid = _PRONOUNS[gender]
    fhe, _, _, _, fhim, _, fkid = _PRONOUNS[fgender]
    obj = c(_COLOURS) + " " + c(_OBJECTS)
    pet, wild, food, flavour = c(_PETS), c(_WILD), c(_FOODS), c(_FLAVOURS)
    seat, sound = _PET_SEATS[pet]
    bake = flavour + " " + c(_DISHES)
    act, acted = c(_ACTS)
    pos1, pos2 = _two(rng, _POSITIVE)
    neg1, neg2 = _two(rng, _NEGATIVE)
    return {
        "Name": name, "he": he, "He": He, "his": his, "His": His, "him": him, "self": self,
        "kid": kid, "a_trait": _A_TRAITS[c(_TRAITS)], "friend": friend, "fhe": fhe, "fhim": fhim,
        "fkid": fkid, "a_ftrait": _A_TRAITS[c(_TRAITS)], "town": c(_TOWNS), "town2": c(_TOWNS),
        "place": c(_PLACES), "place2": c(_PLACES), "rel": c(_RELATIVES), "job": (job := c(_JOBS)),
        "a_job": _a(job), "obj": obj, "a_obj": _a(c(_OBJ_ADJS) + " " + obj), "pet": pet,
        "a_pet": _a(pet), "seat": seat, "sound": sound, "petname": c(_PET_NAMES), "wild": wild,
        "a_wild": _a(wild), "wilds": _WILD_PLURALS[wild], "num": c(_NUMBERS),
        "foods": _FOOD_PLURALS[food], "food_adj": c(_FOOD_ADJS), "bake": bake, "a_bake": _a(bake),
        "flowers": c(_FLOWER_PLURALS), "tree": c(_TREES), "weather": c(_WEATHER), "time": c(_TIMES),
        "day": c(_DAYS), "season": c(_SEASONS), "act": act, "acted": acted, "spot": c(_SPOTS),
        "contest": c(_CONTESTS), "veg": c(_VEGETABLES), "pest": c(_PESTS), "tool": c(_TOOLS),
        "shop_adj": c(_OBJ_ADJS), "shop_items": c(_OBJECT_PLURALS), "a_flower": _a(c(_FLOWERS)),
        "a_snack": _a(c(_FOOD_ADJS) + " " + food), "walked": c(_WALKS), "adverb": c(_ADVERBS),
        "pos1": pos1, "pos2": pos2, "neg1": neg1, "neg2": neg2,
    }  # fmt: skip


def generate_stories(num_stories: int = DEFAULT_NUM_STORIES, seed: int = 0) -> Iterator[str]:
    """Yield seeded, procedurally generated stories, one document per item.

    Each story is one line (a paragraph of about ten sentences, no newlines), plain ASCII. The same
    `num_stories` and `seed` always give byte-identical text; a different seed gives different text.
    A prefix is stable: the first k stories of a long run equal a run of k stories.

    Args:
        num_stories: How many stories to yield. `DEFAULT_NUM_STORIES` meets the diversity figures
            (>= 2,000 word types, >= 200,000 distinct sentences).
        seed: Seed of the private random generator (the global `random` state is untouched).

    Returns:
        An iterator of stories, e.g. "Once upon a time, there was a brave girl named Mia. ..."
    """
    # Validate here, not in the generator, so a bad argument fails at the call, not at first use.
    if num_stories < 0:
        raise ValueError(
            f"generate_stories: num_stories must be >= 0 (got {num_stories}). "
            "Pass a count of stories."
        )
    return _stories(num_stories, seed)


def _stories(num_stories: int, seed: int) -> Iterator[str]:
    """The generator behind `generate_stories` (arguments already checked)."""
    rng = random.Random(seed)
    rnd, beats_by_plot = rng.random, _STORY_BEATS
    n_plots = len(beats_by_plot)
    for _ in range(num_stories):
        slots = _draw_slots(rng)
        sentences = []
        for p, templates in beats_by_plot[int(rnd() * n_plots)]:
            # One random number per beat decides both whether it appears and which template.
            r = rnd()
            if r < p:
                sentences.append(templates[int(r / p * len(templates))].format_map(slots))
        yield " ".join(sentences)


# ---------------------------------------------------------------------------------------------
# Corpus statistics
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusStats:
    """Size and diversity of a corpus.

    Attributes:
        num_stories: Number of documents.
        num_bytes: Total UTF-8 bytes of the documents (separators not counted).
        word_types: Distinct lowercased alphabetic words ("Mia's" counts as "mia" and "s").
        distinct_sentences: Distinct sentences, split after ".", "!" or "?" followed by a space.
    """

    num_stories: int
    num_bytes: int
    word_types: int
    distinct_sentences: int


# Every non-letter becomes a space, so `str.split` yields words with no per-word Python work.
_NON_LETTERS = str.maketrans({chr(i): " " for i in range(128) if not chr(i).isalpha()})
_SENTENCE_END = re.compile(r"(?<=[.!?]) ")


def corpus_stats(stories: Iterable[str]) -> CorpusStats:
    """Count documents, bytes, word types and distinct sentences of `stories` in one pass.

    Args:
        stories: Any iterable of documents, e.g. `generate_stories()` or lines of a text file.

    Returns:
        The figures as a `CorpusStats`.
    """
    num_stories = num_bytes = 0
    words: set[str] = set()
    sentences: set[str] = set()
    for story in stories:
        num_stories += 1
        num_bytes += len(story.encode("utf-8"))
        words.update(story.lower().translate(_NON_LETTERS).split())
        sentences.update(_SENTENCE_END.split(story))
    return CorpusStats(num_stories, num_bytes, len(words), len(sentences))


# ---------------------------------------------------------------------------------------------
# Labelled companion set (sentiment of a short snippet), for the fine-tuning demo
# ---------------------------------------------------------------------------------------------

# Mood sentences whose wording is the same for both labels: only the synonym tells them apart, and
# its polarity is what the stories teach (a from-scratch model sees each synonym only a few times).
_MOOD = (
    "{Name} felt {mood}.",
    "{He} was very {mood}.",
    "{Name} was so {mood}.",
    "{He} felt {mood} all day.",
)
# Negation flips the label, and "not" appears with both polarities, so it is no shortcut by itself.
_MOOD_NOT = (
    "{Name} was not {mood}.",
    "{He} did not feel {mood} that day.",
    "{Name} was not very {mood}.",
    "{He} was not {mood} at all.",
)
# Neutral frames that stories never use, so a snippet is never a copy of a pretraining story.
_SNIPPET_INTRO = (
    "{Name} spent the {time} at the {place} in {town}.",
    "On {day}, {Name} went to the {place} with {his} {rel}.",
    "This is about {a_trait} {kid} named {Name} from {town}.",
    "{Name} looked out of the window at the {place2}.",
)
_SNIPPET_AFTER = (
    "Later, {he} walked home past the {place2}.",
    "That evening, {Name} told {his} {rel} what had happened.",
    "Then it was time to go home.",
    "After that, {Name} went home for supper.",
)
_SPLIT_BUCKETS = {"train": range(8), "validation": range(8, 9), "test": range(9, 10)}


def _snippet(rng: random.Random, positive: bool) -> str:
    """One labelled snippet whose child ends it in a positive (or negative) mood.

    Kinds, so that a classifier needs the vocabulary, negation and the events in order:
    a mood synonym (25%); a negated synonym of the other polarity (25%); one event, mood never
    named (20%); two events, good then bad or bad then good, the later one deciding (15%); one event
    then a mood synonym (15%). Neutral sentences appear equally often under both labels.
    """
    slots = _draw_slots(rng)
    c = rng.choice
    moods, other = (_POSITIVE, _NEGATIVE) if positive else (_NEGATIVE, _POSITIVE)
    kind = rng.random()
    if kind < 0.5:
        negated = kind >= 0.25
        slots["mood"] = c(other if negated else moods)
        sentences = [c(_SNIPPET_INTRO), c(_MOOD_NOT if negated else _MOOD)]
        if rng.random() < 0.5:
            sentences.append(c(_SNIPPET_AFTER))
    else:
        plot = c(_PLOTS)
        good, bad = c(plot.good), c(plot.bad)
        if kind < 0.7:
            sentences = [c(plot.setup), good if positive else bad, c(_SNIPPET_AFTER)]
        elif kind < 0.85:
            sentences = [c(plot.setup)] + ([bad, good] if positive else [good, bad])
        else:
            slots["mood"] = c(moods)
            sentences = [c(plot.setup), good if positive else bad, c(_MOOD)]
    return " ".join(t.format_map(slots) for t in sentences)


def labelled_examples(num_examples: int, seed: int = 0, split: str = "train") -> list[dict]:
    """Labelled snippets from the story world: the mood of the child, for text classification.

    Labels are balanced (equal counts, up to one for odd sizes) and the list is shuffled. A text
    belongs to exactly one split, decided by a checksum of the text (80% train, 10% validation,
    10% test), so splits never share a text whatever the sizes and seeds asked for. Same arguments
    give the same list.

    Args:
        num_examples: Number of examples to return.
        seed: Seed; each split draws from its own stream.
        split: "train", "validation" or "test".

    Returns:
        A list of {"text": str, "label": str} with labels from `LABELS`.
    """
    if split not in _SPLIT_BUCKETS:
        raise ValueError(
            f"labelled_examples: unknown split (got {split!r}). Use one of {list(_SPLIT_BUCKETS)}."
        )
    if num_examples < 0:
        raise ValueError(
            f"labelled_examples: num_examples must be >= 0 (got {num_examples}). Pass a count."
        )
    rng = random.Random(f"nlpssl-labelled-{seed}-{split}")  # str seeds are hashed stably (sha512)
    buckets, seen, examples = _SPLIT_BUCKETS[split], set(), []
    while len(examples) < num_examples:
        label = LABELS[len(examples) % len(LABELS)]
        text = _snippet(rng, positive=label == "positive")
        if zlib.crc32(text.encode("utf-8")) % 10 in buckets and text not in seen:
            seen.add(text)
            examples.append({"text": text, "label": label})
    rng.shuffle(examples)
    return examples
