"""The diff's shortcuts (diff.py and the modules it runs), each switchable.

Each shortcut replaces a straightforward computation by a cheaper one with the same
rows; tests set one to False (or SHARED_PEERS_FROM to another count) and compare the
two (tests/analysis/diffknobs.py). The code reads them as `switches.NAME` at the time
it runs, so setting one here is seen everywhere.
"""

from __future__ import annotations

SHARED_PEERS_FROM = 8  # endpoints compared; a one-VM edit (2) keeps the filtered, cheaper sides
GROUPED_PEERS = True  # below SHARED_PEERS_FROM: peers' sides from shared pieces (False: each built and reduced)
REUSE_SAME_SIDES = True  # after a rule edit: a peer whose side is the same in both policies reduced and run once (False: twice)
KEEP_AFTER_RULE_EDITS = True  # rule edits: the new side's analyzer kept for the next commit's old side too (analysis/kept.py; False: group edits only)
SHARE_UNNAMED = True  # group edits: rules naming no edited group read through the old policy's matches (False: each side's own)
NAMING_INDEX = True  # group edits: the VMs naming a group from policy/naming.py's index (False: every VM's rules scanned)
ONLY_DIFFERING = True  # an endpoint's own sides: only pieces whose outcomes differ intersected (False: every pair)
ENDPOINT_CLASSES = True  # many endpoints, no routed network: the peers compared once per class of endpoints (analysis/endpointclass.py; False: per endpoint)
UNITED_CLASSES = True  # with ENDPOINT_CLASSES: classes alike but for the peers their pieces hold compared with the peers once (False: each class)
PEER_TEMPLATES = True  # with ENDPOINT_CLASSES: peers' sides alike but for their rules' names run once (analysis/peertemplate.py; False: apart)
NARROW_SIDES = True  # an endpoint's own side built for the other ends its changed space holds (False: whole)
PEER_CLASSES = True  # with GROUPED_PEERS: peers of one shape reduced once (analysis/peerclass.py; False: each peer)
SHARE_SHAPES = True  # rule or group edits: the peers' shapes read and added in the old side's memo (peerclass.share_shapes; False: each side its own)
LEND_STEPS = True  # rule edits: a rule's step (and its rendered step) taken from the old side when its RuleRef is the same object (False: each side builds its own)
LEND_CANDIDATES = True  # with LEND_STEPS: a VM's own rules that can meet an endpoint taken from the old side's memo when its rules were not replaced (peers.lend_candidates; False: each side finds its own)
