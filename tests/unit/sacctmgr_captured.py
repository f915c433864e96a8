# ruff: noqa: E501 - captured output, kept verbatim
"""Output of a real ``sacctmgr`` (slurm-wlm 22.05.8, Debian 12) talking to a real slurmdbd
on MariaDB, for the unit tests of salt_ext.lib.accounting and the fake in fakesacctmgr.py.

How it was captured: a sandbox bed (tests/testbed, ``SandboxCluster(name="sxwd", nodes=("ctl",
"n1"))``) deployed by ``salt-run slurm.deploy`` with ``slurm:accounting:enabled`` and
``cluster_name: acctbed``; on ctl the database was emptied down to what ``sacctmgr add
cluster`` leaves (``engine.sync({"purge": True}, ...)``, then the leftover account and user
records deleted), ``EMPTY`` read with :func:`salt_ext.lib.accounting.current.read_commands`,
``PILLAR`` applied with :func:`salt_ext.lib.accounting.engine.sync` (its ``sacctmgr -i``
stdin batches are ``WRITES``), ``APPLIED`` read again, then a partition association
(``sacctmgr -i add user name=alice account=physics cluster=acctbed partition=gpu``) added
and the association read once more (``PARTITION_ASSOC_LINE`` is the line it added).
Each value is the exact stdout of one read (``-n -P``: no header, ``|`` between fields).

``WRITES`` was captured again (session 10) when the engine began to create accounts and
users by ``sacctmgr -i load file=/dev/stdin`` (``WRITE_ARGVS``): on the benchmark's bed
(bench/accounting.py, local cluster ``benchacct``; ``sacctmgr show user`` shows a user's
default account for the local cluster only, so the capture must run on it), the same
emptying, the same ``PILLAR`` applied; EMPTY and APPLIED read there were these ones with
``benchacct`` for ``acctbed`` (the association rows in the same set), and the writes are
shown with that name put back. ``WRITES_LINES`` are the first capture's ``add`` lines.
"""

CLUSTER = "acctbed"
VERSION = "slurm-wlm 22.05.8"

PILLAR = {
    "qos": {
        "high": {
            "description": "High priority",
            "priority": 100,
            "flags": ["DenyOnLimit"],
            "preempt": ["low"],
            "limits": {"MaxJobsPerUser": 1, "MaxWall": "2-00:00:00", "MaxTRESPerUser": "cpu=64"},
        },
        "low": {"priority": 1, "usage_factor": 0.5, "limits": {"GrpTRES": "cpu=512,mem=1T"}},
    },
    "accounts": {
        "science": {"description": "Science", "organization": "uni", "fairshare": 100},
        "physics": {
            "parent": "science",
            "fairshare": 50,
            "qos": ["normal", "high"],
            "default_qos": "normal",
            "limits": {"GrpTRES": "cpu=256,node=8", "MaxJobs": 20, "MaxWall": "1-00:00:00"},
        },
        "chemistry": {"parent": "science"},
    },
    "users": {
        "alice": {"accounts": ["physics"]},
        "bob": {
            "default_account": "chemistry",
            "admin_level": "operator",
            "accounts": {"chemistry": {}, "physics": {"limits": {"MaxJobs": 5}}},
        },
    },
}

EMPTY = {
    "tres": ("cpu|\nmem|\nenergy|\nnode|\nbilling|\nfs|disk\nvmem|\npages|\n"),
    "qos": ("normal|0|||cluster|00:00:00|1.000000||||||||||||||||||||||Normal QOS default\n"),
    "accounts": ("root|default root account|root\n"),
    "users": ("root|root|Administrator\n"),
    "assocs": (
        "acctbed|root||||1|normal||||||||||||||||\nacctbed|root|root|||1|||||||||||||||||\n"
    ),
}

APPLIED = {
    "tres": ("cpu|\nmem|\nenergy|\nnode|\nbilling|\nfs|disk\nvmem|\npages|\n"),
    "qos": (
        "normal|0|||cluster|00:00:00|1.000000||||||||||||||||||||||Normal QOS default\n"
        "high|100|DenyOnLimit|low|cluster|00:00:00|1.000000|||||||||||1|||||||cpu=64|2-00:00:00|||high priority\n"
        "low|1|||cluster|00:00:00|0.500000||||cpu=512,mem=1T||||||||||||||||||low\n"
    ),
    "accounts": (
        "chemistry|chemistry|science\n"
        "physics|physics|science\n"
        "root|default root account|root\n"
        "science|science|uni\n"
    ),
    "users": ("alice|physics|None\nbob|chemistry|Operator\nroot|root|Administrator\n"),
    "assocs": (
        "acctbed|root||||1|normal||||||||||||||||\n"
        "acctbed|root|root|||1|||||||||||||||||\n"
        "acctbed|science|||root|100|||||||||||||||||\n"
        "acctbed|chemistry|||science|1|||||||||||||||||\n"
        "acctbed|chemistry|bob|||1|||||||||||||||||\n"
        "acctbed|physics|||science|50|high,normal|normal||||cpu=256,node=8||||20||||||1-00:00:00|\n"
        "acctbed|physics|alice|||1|||||||||||||||||\n"
        "acctbed|physics|bob|||1||||||||||5|||||||\n"
    ),
}

WRITES = [
    (
        'add qos name=high Description="High priority" Flags=DenyOnLimit MaxJobsPerUser=1 MaxTRESPerUser=cpu=64 MaxWall=2880 Priority=100\n'
        "add qos name=low GrpTRES=cpu=512,mem=1048576 Priority=1 UsageFactor=0.5\n"
        "modify qos where name=high set Preempt=low\n"
    ),
    (
        "Cluster - 'acctbed'\n"
        "Parent - 'root'\n"
        'Account - \'science\':Description="Science":Fairshare=100:Organization="uni"\n'
        "Parent - 'science'\n"
        "Account - 'chemistry'\n"
        "Account - 'physics':DefaultQOS=normal:Fairshare=50:GrpTRES=cpu=256,node=8:MaxJobs=20:MaxWall=1440:QOS=high,normal\n"
        "Parent - 'physics'\n"
        "User - 'alice':DefaultAccount=physics\n"
        "Parent - 'chemistry'\n"
        "User - 'bob':DefaultAccount=chemistry:AdminLevel=Operator\n"
        "Parent - 'physics'\n"
        "User - 'bob':MaxJobs=5\n"
    ),
]
WRITE_ARGVS = [["sacctmgr", "-i"], ["sacctmgr", "-i", "load", "file=/dev/stdin"]]
# the same pillar applied by `add` lines only (engine before the load file; also checked
# on slurmdbd, it left the same APPLIED)
WRITES_LINES = [
    (
        'add qos name=high Description="High priority" Flags=DenyOnLimit MaxJobsPerUser=1 MaxTRESPerUser=cpu=64 MaxWall=2880 Priority=100\n'
        "add qos name=low GrpTRES=cpu=512,mem=1048576 Priority=1 UsageFactor=0.5\n"
        "modify qos where name=high set Preempt=low\n"
    ),
    (
        'add account name=science cluster=acctbed parent=root Description="Science" Fairshare=100 Organization="uni"\n'
        "add account name=chemistry cluster=acctbed parent=science\n"
        "add account name=physics cluster=acctbed parent=science DefaultQOS=normal Fairshare=50 GrpTRES=cpu=256,node=8 MaxJobs=20 MaxWall=1440 QOS=high,normal\n"
    ),
    (
        "add user name=alice cluster=acctbed account=physics DefaultAccount=physics\n"
        "add user name=bob cluster=acctbed account=chemistry DefaultAccount=chemistry AdminLevel=Operator\n"
        "add user name=bob cluster=acctbed account=physics MaxJobs=5\n"
    ),
]

PARTITION_ASSOC_LINE = "acctbed|physics|alice|gpu||1|||||||||||||||||\n"
