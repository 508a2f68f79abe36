# -*- test-case-name: ross.test.test_containers_config -*-
"""
Container IDs and names: generation, validation, lookup by prefix.
"""

from __future__ import annotations

import os
import random
import re
from typing import Callable, Iterable, Mapping

from ross.errors import InvalidArgument, NotFound

NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
FULL_ID = re.compile(r"^[0-9a-f]{64}$")

_LEFT = (
    "admiring adoring agitated amazing angry awesome blissful bold boring brave busy charming clever "
    "compassionate competent condescending confident cool cranky crazy dazzling determined distracted "
    "dreamy eager ecstatic elastic elated elegant eloquent epic exciting fervent festive flamboyant "
    "focused friendly frosty funny gallant gifted goofy gracious great happy hardcore heuristic hopeful "
    "hungry infallible inspiring intelligent interesting jolly jovial keen kind laughing loving lucid "
    "magical modest musing mystifying naughty nervous nice nifty nostalgic objective optimistic peaceful "
    "pedantic pensive practical priceless quirky quizzical recursing relaxed reverent romantic sad serene "
    "sharp silly sleepy stoic strange stupefied suspicious sweet tender thirsty trusting unruffled "
    "upbeat vibrant vigilant vigorous wizardly wonderful xenodochial youthful zealous zen"
).split()

_RIGHT = (
    "agnesi albattani allen almeida antonelli archimedes ardinghelli aryabhata austin babbage banach "
    "bardeen bartik bassi beaver bell benz bhabha bhaskara black blackburn blackwell bohr booth borg "
    "bose bouman boyd brahmagupta brattain brown buck burnell cannon carson cartwright carver cerf "
    "chandrasekhar chaplygin chatelet chatterjee chaum chebyshev clarke cohen colden cori cray curie "
    "darwin davinci dewdney dhawan diffie dijkstra dirac driscoll dubinsky easley edison einstein elbakyan "
    "elgamal elion ellis engelbart euclid euler faraday feistel fermat fermi feynman franklin gagarin "
    "galileo galois ganguly gates gauss germain goldberg goldstine goldwasser golick goodall gould "
    "greider grothendieck haibt hamilton haslett hawking heisenberg hellman hermann herschel hertz "
    "heyrovsky hodgkin hofstadter hoover hopper hugle hypatia ishizaka jackson jang jemison jennings "
    "jepsen johnson joliot jones kalam kapitsa kare keldysh keller kepler khayyam khorana kilby kirch "
    "knuth kowalevski lalande lamarr lamport leakey leavitt lederberg lehmann lewin lichterman liskov "
    "lovelace lumiere mahavira margulis matsumoto maxwell mayer mccarthy mcclintock mclaren mclean "
    "mcnulty meitner mendel mendeleev meninsky merkle mestorf mirzakhani montalcini moore morse moser "
    "murdock napier nash neumann newton nightingale nobel noether northcutt noyce panini pare pascal "
    "pasteur payne perlman pike poincare poitras proskuriakova ptolemy raman ramanujan rhodes ride "
    "ritchie robinson roentgen rosalind rubin saha sammet sanderson satoshi shamir shannon shaw shirley "
    "shockley shtern sinoussi snyder solomon spence stonebraker sutherland swanson swartz swirles taussig "
    "tesla tharp thompson torvalds tu turing varahamihira vaughan villani visvesvaraya volhard wescoff "
    "wilbur wiles williams williamson wilson wing wozniak wright wu yalow yonath zhukovsky"
).split()


def new_id(randbytes: Callable[[int], bytes] = os.urandom) -> str:
    """
    A fresh 64-hex container ID whose short form is not all digits: it is
    the container's hostname, and a resolver reads a name of digits alone as
    a (bad) address and never looks it up (glibc's digits-and-dots rule;
    docker's IDs avoid it the same way).
    """
    while True:
        cid = randbytes(32).hex()
        if not cid[:12].isdigit():
            return cid


def generate_name(taken: Iterable[str], rng: random.Random | None = None) -> str:
    """
    A docker-style "adjective_scientist" name not in C{taken}; a digit is
    appended after repeated collisions.
    """
    rng = rng or random.SystemRandom()
    used = set(taken)
    for attempt in range(100):
        name = f"{rng.choice(_LEFT)}_{rng.choice(_RIGHT)}"
        if attempt >= 10:
            name += str(rng.randint(0, 9))
        if name not in used:
            return name
    raise RuntimeError("could not generate a unique container name")


def validate_name(name: str) -> str:
    """
    The name without a leading slash; InvalidArgument for names docker
    would refuse.
    """
    if len(name) > 255 or not NAME.match(name):
        raise InvalidArgument(
            f'Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed'
        )
    return name.lstrip("/")


def lookup(ref: str, ids: Iterable[str], names: Mapping[str, str], kind: str = "container") -> str:
    """
    The full ID of a container named by full ID, name, or unique ID prefix.
    Names win over prefixes, as in docker. NotFound for nothing,
    InvalidArgument for an ambiguous prefix.
    """
    if not ref:
        raise InvalidArgument(f"{kind} name or ID must not be empty")
    ids = list(ids)
    if FULL_ID.match(ref) and ref in ids:
        return ref
    name = ref.lstrip("/")
    # A name claimed by a create still under way names no container yet.
    if name in names and names[name] in ids:
        return names[name]
    if re.fullmatch(r"[0-9a-f]+", ref):
        matches = [i for i in ids if i.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidArgument(f"multiple IDs found with provided prefix: {ref[:64]}")
    raise NotFound(f"No such {kind}: {ref[:128]}")
