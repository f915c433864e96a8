"""Slurm accounting as code: QOS, accounts, users and their limits from the
``slurm:accounting`` pillar, kept in the cluster's slurmdbd with ``sacctmgr``.

Modules: :mod:`.values` (fields and value kinds), :mod:`.pillar` (validation -> wanted
model), :mod:`.current` (one ``sacctmgr -n -P show`` per entity kind -> current model),
:mod:`.diff` (changes, drift, unmanaged, the load files and batched command lines),
:mod:`.engine` (read once, apply phases, re-read to prove convergence).

Layer: stands on :mod:`salt_ext.lib.util` only (beside ``conf``); ``node`` and ``ops`` may
use it, and so may the minion-side exec/state modules ``slurm_accounting`` (sacctmgr runs
on the controller or dbd host). Salt-free.

Threat model
============
The pillar may be hostile or simply wrong (a merge from another team's pillar, a typo, a
value pasted from a ticket), and its values end up in ``sacctmgr`` command lines, which we
feed to ``sacctmgr -i`` on its stdin, one command per line. sacctmgr splits a line into
words on white space, toggles quoting on ``"`` and ``'``, splits name lists on ``,``,
splits options on the first ``=`` (and ``+=``/``-=``), treats a line starting with ``#`` as
a comment and ``!!`` as "repeat the last command", turns quotes inside values into
backticks and lowers names. sacctmgr itself runs as the admin, so whatever line reaches it
is executed with full accounting rights. Threats, and what stops each (each has a test in
tests/unit/test_accounting.py):

T1 command injection by newline: a value containing ``\\n`` (``"x\\ndelete account
   physics"``) would start a second command on stdin. -> Names allow only
   ``[a-z0-9_.-]``; text refuses every control character; :func:`.diff.check_line`
   refuses any line with a control character before it is written.
T2 list injection by ``,``: a user named ``alice,bob`` or an account ``tmp,root`` would make
   sacctmgr add or delete two entities. -> ``,`` is not a name character and not allowed
   in text.
T3 option injection by space or ``=``: a description ``x parent=root`` or a name
   ``a cluster=other`` would add an option. -> names refuse both; text is written between
   double quotes and may not contain quotes; every word of every line is re-checked
   (:func:`.values.token_ok`).
T4 quote breakout: ``"`` or ``'`` toggles the tokenizer's quoting and would glue words
   together. -> refused in names and text.
T5 case folding: sacctmgr lowers names, so ``Root`` would become ``root`` (a protected
   entity) and ``Alice`` would drift forever. -> upper case is refused, with a hint.
T6 protected entities: the ``root`` account (and its cluster association), the ``root``
   user, the ``normal`` QOS and every account that stays a user's default account are
   never removed, purge or not; ``root`` cannot be declared as a managed account.
T7 names read back from the cluster: an entity made by hand may have a name we would not
   accept; it is reported but never put in a command (``kept`` says why).
T8 output confusion: a ``|`` or newline inside a hand-made description would shift
   ``-P`` columns and attribute a value to the wrong entity. -> a line with the wrong
   field count stops the run (:class:`.current.ParseError`), nothing is changed.
T9 exhaustion: counts (QOS, accounts, users, accounts per user, TRES per limit), name and
   text lengths, numbers (uint32 limits, TRES counts) and the error list are bounded;
   command lines stay under 3,500 characters and 100 words.
T11 the load file: new accounts and users go to ``sacctmgr -i load file=/dev/stdin`` as
   ``Kind - 'name':Key=value:...`` lines, where ``:`` separates options and the line ends
   the entity. -> the same names and text rules (T1-T5: no newline, quote or control
   character can reach a line), a value with ``:`` outside a quoted text goes by an
   ``add`` line instead (:func:`.diff._loadable`), and :func:`.diff.check_load_line`
   re-checks every line of the file (kind, quoted name, each option a checked word,
   under :data:`.diff.LINE_MAX` characters) before the file is written; load commits all
   or nothing, and the engine's re-read proves the result as for lines.
T10 bad numbers: booleans, negatives, floats where integers go, ``-1``/``INFINITE`` inside
   TRES, unknown TRES types (``gpu:x``), non-numeric counts (``cpu=abc``), malformed
   durations are refused with the key named; "no limit" is written as null.
"""
