"""Lab 7's grader: the monitors' two-phase commit, judged on every replica.

The images run userland/twophase.S (a program that asks its monitor to
retype whole shared regions into frames) and userland/region_user.S
(a program that uses part of a region on its core) beside a monitor on
every core, built from the student's userland/monitor_agree.S. While a
run goes, a watcher (Watcher, hooked before the first instruction) looks
at the machine at the moments that matter, as the URPC tracepoints report
them:

  a participant's reply     its vote: its replica unchanged, its copy of
                            the region locked if and only if it said yes,
                            nothing pending after a no; on the asker's core
                            the retype's own error if the retype is
                            refused, the frame in the program's hands at a
                            yes, its copy as it was after a no; its
                            acknowledgement: the decision applied in its
                            replica and its capabilities, the lock gone
                            (after an abort the asker's copy free again);
                            on any other core, the slot MSG_DEST names
                            left alone
  monitor 0's PREPARE       its own vote cast: its copy locked (and if it
                            is the asker, the frame given)
  monitor 0 takes a reply   signed by the core it came from
  monitor 0's decision      on a transaction it asked about (its own no ends
                            one); every vote in; COMMIT only if every vote
                            was yes; no other replica changed yet, every
                            yes still locked
  monitor 0's answer        every acknowledgement in; a refusal names a core
                            that said no; every monitor's replica
                            (kernel/replica.py) and every core's copy of
                            every region as the answers so far say

and after the run every replica agrees with every other, and each asking
program holds the whole region as a frame exactly when a commit gave it.
Where one program asks (STORIES), each answer is the one its image's
comment tells: a solution that refuses what it should commit agrees too.
Each finding has a kind; each test fails on the first finding of its
kinds (or of kind "protocol", which every test reports), in runs under the
schedules it names (QUANTA, SEEDS). A program killed for a fault is named
by label and line (kernel/diagnosis.user_faults).
"""

from dataclasses import astuple, dataclass, field

from sprat.lab.grading import QUANTA, SEEDS, boot, fail, test

# userland/monitor.S, userland/lib/monitor_client.S: word 0 of a message
OP_PREPARE, OP_COMMIT, OP_ABORT, OP_ANSWER, OP_REPLY = 6, 7, 8, 11, 13
MONITOR_ANSWER = 0x414E53
DECISION = {OP_COMMIT: "COMMIT", OP_ABORT: "ABORT"}
MAX_CYCLES = 3_000_000            # the images end before 1,200,000 cycles
FAST_FIRST = tuple(sorted(QUANTA, reverse=True))   # a hang costs least at a large quantum

DEMO = ("images/demo.lst", "amd-2x2")              # commit, refusals, failure on the asker
ASKER_0 = ("images/asker-0.lst", "intel-2x4")      # monitor 0's own program asks
SLOT_TAKEN = ("images/slot-taken.lst", "amd-2x2")  # the asker's give refused
CONTENDED = ("images/contended.lst", "intel-2x4")  # two askers, three users
CONTENDED_16 = ("images/contended-16.lst", "amd-4x4")  # ... racing with the votes

# What monitor 0 answers, transaction by transaction, where one program asks
# and the schedule cannot change it (the images' comments tell it):
# (error, the core that refused), (0, -1) for a commit.
STORIES = {
    "images/demo.lst": [(0, -1), (120, 2), (121, 0), (107, 3), (0, -1), (120, 2)],
    "images/asker-0.lst": [(107, 0), (0, -1), (120, 5), (0, -1), (120, 0)],
    "images/slot-taken.lst": [(105, 3), (0, -1), (105, 3)],
}


@dataclass
class Finding:
    kind: str            # "vote", "ack", "decision", "answer", "state", or "protocol":
                         # a fault every later check rests on, which every test reports
    reason: str
    stop: str


@dataclass
class Transaction:
    """What the messages told about transaction `number`."""
    number: int
    region: int = -1
    initiator: int = -1
    dispatcher: int = -1
    dest: int = 0
    asked: bool = False                            # monitor 0 sent PREPARE
    before: tuple = ()                             # the region's record before it
    votes: dict = field(default_factory=dict)     # core -> its vote, as monitor 0 took it
    requests: dict = field(default_factory=dict)  # core -> the phase ("vote" or
                                                  # "acknowledgement") in which monitor 0
                                                  # took a message from it that was no reply
    decision: int | None = None                   # OP_COMMIT or OP_ABORT, as monitor 0 sent it
    acks: set = field(default_factory=set)        # cores whose acknowledgement monitor 0 took
    answered: bool = False


class Watcher:
    """Looks at the machine whenever a tracepoint reports a step of the protocol."""

    def __init__(self, story=None):
        self.story = story or []                   # STORIES' answers for this image
        self.system = None
        self.findings: list[Finding] = []
        self.transactions: dict[int, Transaction] = {}
        self.current: Transaction | None = None    # monitor 0's, since its last PREPARE
        self.taken = {}                            # core -> (op, the message, its record then)
        self.hits = {}                             # (op, core) -> how many it took
        self.voted = {}                            # (core, txn) -> its vote, as it sent it
        self.model = {}                            # region -> (owner, version): the commits
        self.commits = 0

    def install(self, system) -> None:
        self.system = system
        system.machine.observers.append(self.on_event)

    def note(self, kind, reason, stop, hit=1) -> None:
        """A finding; `hit`: which stop at `stop` in the replay is the one it is about."""
        if hit > 1:
            reason += f" (in the replay, the {ordinal(hit)} stop at {stop.split()[0]})"
        self.findings.append(Finding(kind, reason, stop))

    # --- the events --------------------------------------------------------------------
    def on_event(self, event, **fields) -> None:
        if event not in ("send", "recv"):
            return
        core, words = fields["core"], fields["words"]
        op = words[0]
        if core == 0:
            if event == "send" and op == OP_PREPARE:
                self.prepare_sent(words)
            elif event == "recv" and op == OP_REPLY and self.current is not None:
                sender = fields["peer"] if fields["peer"] is not None else words[2]
                self.reply_taken(sender, words[2], words[1])
            elif event == "recv" and self.current is not None and not self.current.answered \
                    and fields["peer"] is not None:
                self.request_taken(fields["peer"])
            elif event == "send" and op in DECISION:
                self.decision_sent(op, words[2])
            elif event == "send" and op in (OP_ANSWER, MONITOR_ANSWER) and words[3] >= 1:
                self.answered(words[3], words[1], words[2])
                self.check_story(words[3], words[1], words[2], "root_retype_answer core 0")
        elif event == "recv" and op in (OP_PREPARE, OP_COMMIT, OP_ABORT):
            self.hits[op, core] = self.hits.get((op, core), 0) + 1
            self.taken[core] = (op, words, self.record(core, words[1]),
                                self.copy_state(core, words[1]),
                                self.holds(core, words[5], words[6]))
        elif event == "send" and op == OP_REPLY and core in self.taken:
            self.participant_replied(core, words[1], *self.taken.pop(core))

    # --- a participant -----------------------------------------------------------------
    def participant_replied(self, core, result, op, request, before, copy_before,
                            held_before) -> None:
        region, txn, initiator = request[1], request[2], request[3]
        hit = self.hits[op, core]
        record = self.record(core, region)
        state = self.copy_state(core, region)
        if core != initiator:
            self.check_bystander(core, op, request, held_before, hit)
        if op == OP_PREPARE:
            self.voted[core, txn] = result
            self.check_vote(core, result, region, txn, before, record, state, hit)
            if core != initiator and result != 0 and state == "free":
                self.note("vote", f"core {core} voted no (error {result}) on transaction "
                          f"{txn} though its copy of region {region} is free: CAP_LOCK grants "
                          f"that lock, and a core not the asker's says no only when its lock "
                          f"is refused (only the asker's core, MSG_INITIATOR, retypes and "
                          f"gives)", f"prepare_retype core {core}", hit)
            if core == initiator and copy_before == "free":
                self.check_retype_error(core, result, region, txn, request[4], hit)
            if core == initiator and result != 0 and copy_before == "free" \
                    and state != "free":
                self.note("vote", f"core {core}, the asker's, voted no (error {result}) on "
                          f"transaction {txn}, but its copy of region {region}, free when "
                          f"PREPARE came, is {state} now: a no undoes what the vote did "
                          f"(the new object deleted if the give failed, the lock released)",
                          f"prepare_retype core {core}", hit)
            if core == initiator and result == 0:
                self.check_frame_given(core, request[5], request[6], region, txn,
                                       f"prepare_retype core {core}", hit)
        elif op == OP_COMMIT and self.voted.get((core, txn), 0) != 0:
            return          # told to commit after its no: decision_waits_for_every_vote says so
        elif txn not in self.transactions or not self.transactions[txn].asked:
            return          # told a decision on what it never voted on: decided_unasked says so
        else:
            # as the region was when monitor 0 asked: after COMMIT one version
            # more and the initiator's; after ABORT as it was
            t = self.transactions.get(txn)
            was = t.before if t is not None and t.before else self.expected(region)
            owner = initiator if op == OP_COMMIT else (was[1] if was[0] == "retyped" else None)
            want = ("retyped", initiator, was[2] + 1, 0) if op == OP_COMMIT else was
            problems = self.problems(core, region, want, owner)
            if op == OP_ABORT and core == initiator:
                slot = self.holds(core, request[5], request[6])
                if slot:
                    problems.append(f"the asking program still holds {slot} (the tentative "
                                    f"retype)")
                if self.voted.get((core, txn)) == 0:
                    problems += self.left_in_use(core, region)
            if problems:
                name, undo = (("commit", "apply it") if op == OP_COMMIT
                              else ("abort", "roll back"))
                self.note("ack", f"core {core} acknowledged the {name} of transaction {txn}, "
                          f"but {'; '.join(problems)}: {undo}, then acknowledge",
                          f"{name}_retype core {core}", hit)

    def check_vote(self, core, vote, region, txn, before, record, state, hit) -> None:
        stop = f"prepare_retype core {core}"
        if vote >= 1 << 32:
            why = (f"positive (CAP_LOCK returns -error: this is {signed(vote)})"
                   if -4096 < signed(vote) < 0 else
                   "and this is no error code at all: was the register that held the error "
                   "one that a call after it clobbers? (cap_* clobber rcx, r10 and r11)")
            self.note("vote", f"core {core} voted {vote:#x} on transaction {txn}: a vote is 0 "
                      f"(yes) or the refusal's error code, {why}", stop, hit)
        if record is not None and before is not None and record[:3] != before[:3]:
            self.note("vote", f"core {core}'s monitor changed its replica when it voted on "
                      f"transaction {txn} (region {region} was {self.said(before)}, is "
                      f"{self.said(record)}): a replica changes on COMMIT, never before",
                      stop, hit)
        if vote == 0 and state != "locked":
            why = (" (a program uses it there: CAP_LOCK refuses, and its error is the vote)"
                   if state == "in use" else "")
            self.note("vote", f"core {core} voted yes on transaction {txn} but its copy of "
                      f"region {region} is {state}, not locked{why}", stop, hit)
        if vote != 0 and record is not None and record[3] == txn:
            self.note("vote", f"core {core} voted no on transaction {txn} but recorded it in "
                      f"its replica as pending on region {region}: REGION_PENDING says we "
                      f"voted yes (an abort undoes what it finds there), so it is written only "
                      f"once the lock is granted", stop, hit)
        if vote != 0 and state == "locked":
            self.note("vote", f"core {core} voted no on transaction {txn} but left its copy of "
                      f"region {region} locked: a no holds nothing", stop, hit)

    def check_retype_error(self, core, vote, region, txn, new_type, hit) -> None:
        """On the asker's core, whose copy was free (so its lock was granted): if the
        retype itself is refused, the vote is the retype's error, not a later step's."""
        from kernel.capservice import SHARED_REGION_BITS
        from kernel.caps.errors import CapError, ErrorCode
        from kernel.caps.rules import check_retype
        service = self.system.machine._hypercall_handler
        try:
            check_retype(service.regions[core][region], new_type, SHARED_REGION_BITS, 0, 1)
        except CapError as refused:
            if vote != refused.code:
                said = ErrorCode(vote).name if vote in set(ErrorCode) else "no such error"
                self.note("vote", f"core {core} voted {vote} ({said}) on transaction {txn}, "
                          f"but its retype of region {region} into type {new_type} is refused "
                          f"with {refused.code.value} ({refused.code.name}): the vote is the "
                          f"retype's own error (check CAP_RETYPE's rax before the give)",
                          f"prepare_retype core {core}", hit)

    def check_bystander(self, core, op, request, held_before, hit) -> None:
        """On a core that is not the asker's, MSG_DISPATCHER and MSG_DEST name some
        other program's slot, or none: the transaction's step leaves it alone."""
        held = self.holds(core, request[5], request[6])
        if held == held_before:
            return
        name, step = {OP_PREPARE: ("vote", "prepare_retype"),
                      OP_COMMIT: ("commit", "commit_retype"),
                      OP_ABORT: ("abort", "abort_retype")}[op]
        self.note("ack" if op != OP_PREPARE else "vote",
                  f"core {core}'s {name} of transaction {request[2]} changed what dispatcher "
                  f"{request[5]} of core {core} holds at {request[6]:#x} (it held "
                  f"{held_before or 'nothing'}, now {held or 'nothing'}): only on the asker's "
                  f"core (MSG_INITIATOR, here core {request[3]}) do MSG_DISPATCHER and "
                  f"MSG_DEST name the asking program; elsewhere they name some other "
                  f"program's capability, which the transaction leaves alone",
                  f"{step} core {core}", hit)

    def check_frame_given(self, core, dispatcher, dest, region, txn, stop, hit) -> None:
        """The asker's core votes yes only once the asking program holds the frame:
        its retype and its give are its vote, so a give that would fail is its no,
        not a failure after the decision that no one could roll back."""
        slot = self.holds(core, dispatcher, dest)
        if slot == self.whole(region):
            return
        self.note("vote", f"core {core}, the asker's, voted yes on transaction {txn}, but "
                  f"the asking program holds {slot or 'nothing'} where the new frame goes: "
                  f"the asker's monitor retypes its locked copy and gives the frame "
                  f"(cap_give) before it votes yes, so that a retype or a give that fails "
                  f"is its no", stop, hit)

    def left_in_use(self, core, region) -> list[str]:
        """After an abort, on a core that voted yes: its copy is free again. (Only on the
        asker's core: elsewhere a program may take the copy the moment it is unlocked.)"""
        state = self.copy_state(core, region)
        if state != "in use":
            return []
        return [f"its copy of region {region} is in use, though it was free when it voted yes "
                f"(is the frame it took back deleted?)"]

    # --- monitor 0 -----------------------------------------------------------------------
    def prepare_sent(self, words) -> None:
        txn = words[2]
        if txn in self.transactions and self.transactions[txn].asked:
            return                                  # the same PREPARE to the next core
        t = self.transactions.setdefault(txn, Transaction(txn))
        t.region, t.initiator, t.dispatcher, t.dest, t.asked = \
            words[1], words[3], words[5], words[6], True
        t.before = self.expected(t.region)
        self.current = t
        self.check_own_vote(t)
        if t.initiator == 0:
            self.check_frame_given(0, t.dispatcher, t.dest, t.region, t.number,
                                   "two_phase_commit core 0", t.number)

    def check_own_vote(self, t) -> None:
        """Monitor 0 votes before it asks: its copy is locked when PREPARE goes out."""
        state = self.copy_state(0, t.region)
        if state == "locked":
            return
        stop = "two_phase_commit core 0"
        if state == "free":
            self.note("protocol", f"monitor 0 sent PREPARE for transaction {t.number} without "
                      f"voting itself: its copy of region {t.region} is free, not locked "
                      f"(two_phase_commit calls vote first, as every monitor votes)", stop,
                      t.number)
        else:
            self.note("protocol", f"monitor 0 sent PREPARE for transaction {t.number} though "
                      f"its own copy of region {t.region} is {state}, so its vote is no: a no "
                      f"from monitor 0 ends the transaction before anyone else is asked",
                      stop, t.number)

    def reply_taken(self, core, signed, result) -> None:
        """Monitor 0 took a reply from `core`, which signed it `signed`."""
        t = self.current
        if signed != core:
            self.note("protocol", f"core {core}'s reply to transaction {t.number} says it is "
                      f"core {signed}: reply signs with rbx, so keep rbx (our core) through "
                      f"vote, apply_commit and apply_abort", f"reply core {core}")
        if t.decision is None:
            t.votes.setdefault(core, result)
        else:
            t.acks.add(core)

    def request_taken(self, core) -> None:
        """Monitor 0 took a message from `core` that is no reply, in a transaction."""
        t = self.current
        t.requests.setdefault(core, "vote" if t.decision is None else "acknowledgement")

    def none_yet(self, t, missing, step) -> str:
        """'core 1, 3' for the cores whose `step` monitor 0 went on without, and whether
        it took another message from one of them for it."""
        said = f"none yet from core {cores(missing)}"
        mistaken = [core for core in missing if t.requests.get(core) == step]
        if mistaken:
            said += (f"; it took a request that core {cores(mistaken)} forwarded for the "
                     f"{step}: read replies with gather_votes, which keeps requests for later")
        return said

    def decision_sent(self, op, txn) -> None:
        asked = self.transactions.get(txn)
        if asked is None or not asked.asked:
            self.decided_unasked(op, txn)
            return
        t = self.current
        if t.number != txn or t.decision is not None:
            return                                  # the same decision to the next core
        t.decision = op
        stop = "two_phase_commit core 0"
        missing = [core for core in self.others() if core not in t.votes]
        if missing:
            self.note("decision", f"monitor 0 sent {DECISION[op]} for transaction {txn} before "
                      f"every vote was in ({self.none_yet(t, missing, 'vote')}): decide once "
                      f"every core has voted", stop, txn)
        refusals = {core: vote for core, vote in t.votes.items() if vote != 0}
        if op == OP_COMMIT and refusals:
            core, vote = next(iter(sorted(refusals.items())))
            self.note("decision", f"monitor 0 committed transaction {txn} though core {core} "
                      f"voted no (error {vote}): any no aborts", stop, txn)
        if op == OP_ABORT and not refusals and not missing:
            self.note("decision", f"monitor 0 aborted transaction {txn} though every core voted "
                      f"yes: all yes commits", stop, txn)
        self.check_undecided(t, stop)

    def decided_unasked(self, op, txn) -> None:
        """Monitor 0 sent a decision on a transaction it never sent PREPARE for: its
        own vote was no, which ends the transaction before anyone else is asked."""
        t = self.transactions.setdefault(txn, Transaction(txn))
        if t.decision is not None:
            return                                  # the same decision to the next core
        t.decision = op
        self.note("decision", f"monitor 0 sent {DECISION[op]} for transaction {txn}, for "
                  f"which it sent no PREPARE: its own vote was no, which ends the transaction "
                  f"(VERDICT, REFUSER and return): nobody else voted, so nobody has anything "
                  f"to apply or roll back", "two_phase_commit core 0", txn)

    def check_undecided(self, t, stop) -> None:
        """As monitor 0 sends its decision, no other monitor can know it yet: each
        one's record of the region is as before the transaction, and a copy that
        voted yes is still locked. (A monitor that applied a commit once it had
        voted yes, and undid it on ABORT, looks right at its every reply.)"""
        for core in self.others():
            record = self.record(core, t.region)
            if record is not None and record[:3] != t.before[:3]:
                self.note("vote", f"core {core}'s replica says region {t.region} is "
                          f"{self.said(record[:3] + (0,))} as monitor 0 sends its decision on "
                          f"transaction {t.number}, which no other monitor knows yet (it was "
                          f"{self.said(t.before)}): a replica changes on COMMIT, not once its "
                          f"monitor has voted yes", stop, t.number)
                return
            state = self.copy_state(core, t.region)
            if t.votes.get(core) == 0 and state != "locked":
                self.note("vote", f"core {core} voted yes on transaction {t.number}, but its "
                          f"copy of region {t.region} is {state}, not locked, as monitor 0 "
                          f"sends its decision: a yes holds the lock until COMMIT or ABORT",
                          stop, t.number)
                return

    def answered(self, txn, verdict, refuser) -> None:
        stop = "root_retype_answer core 0"
        t = self.transactions.get(txn)
        if t is not None:
            t.answered = True
        if t is None or not t.asked:
            if verdict == 0:
                self.note("decision", f"monitor 0 answered that transaction {txn} committed "
                          f"without asking the other monitors", stop, txn)
            elif self.pending_anywhere(0, txn) is not None:
                self.note("vote", f"monitor 0 voted no on transaction {txn} (error {verdict}) "
                          f"but recorded it in its replica as pending on region "
                          f"{self.pending_anywhere(0, txn)}: REGION_PENDING says we voted yes, "
                          f"so it is written only once the lock is granted", stop, txn)
            elif refuser != 0:
                self.note("decision", f"monitor 0 answered that transaction {txn} was refused "
                          f"(error {verdict}) by core {signed(refuser)}, but it asked no one: "
                          f"its own no refused it, and the answer names core 0 (REFUSER)",
                          stop, txn)
            self.check_state(f"after the answer to transaction {txn}", stop, txn)
            return
        if t.decision is None:
            self.note("decision", f"monitor 0 answered transaction {txn} without sending COMMIT "
                      f"or ABORT to the others: they keep their locks", stop, txn)
            return
        missing = [core for core in self.others() if core not in t.acks]
        if missing:
            self.note("answer", f"monitor 0 answered transaction {txn} before every core had "
                      f"acknowledged the {DECISION[t.decision]} "
                      f"({self.none_yet(t, missing, 'acknowledgement')}): the program may act "
                      f"on a replica not yet changed",
                      stop, txn)
        if (verdict == 0) != (t.decision == OP_COMMIT):
            self.note("decision", f"monitor 0 answered transaction {txn} with {verdict} but "
                      f"sent {DECISION[t.decision]}: the answer is 0 for a commit, else the "
                      f"first refusal's error", stop, txn)
        elif verdict != 0 and not t.votes.get(refuser):
            refused = sorted(core for core, vote in t.votes.items() if vote)
            self.note("decision", f"monitor 0 answered transaction {txn}: refused by core "
                      f"{signed(refuser)} with error {verdict}, but "
                      + (f"core {signed(refuser)} voted yes" if refuser in t.votes
                         else f"core {signed(refuser)} did not vote")
                      + (f"; core {cores(refused)} said no" if refused else "")
                      + ": REFUSER is the first core that said no (gather_votes keeps it)",
                      stop, txn)
        elif verdict != 0 and t.votes[refuser] != verdict:
            self.note("decision", f"monitor 0 answered transaction {txn}: refused by core "
                      f"{refuser} with error {verdict}, but core {refuser} voted "
                      f"{t.votes[refuser]}", stop, txn)
        if t.decision == OP_COMMIT:
            version = self.model.get(t.region, (None, 0))[1] + 1
            self.model[t.region] = (t.initiator, version)
            self.commits += 1
        slot = self.holds(t.initiator, t.dispatcher, t.dest)
        if t.decision == OP_COMMIT and not slot.startswith("a frame of"):
            self.note("state", f"transaction {txn} committed, but the asking program on core "
                      f"{t.initiator} holds {slot or 'nothing'} where the new frame goes",
                      stop, txn)
        elif t.decision == OP_COMMIT and slot != self.whole(t.region):
            self.note("state", f"transaction {txn} committed, but the asking program on core "
                      f"{t.initiator} holds {slot}, not the whole region {t.region} "
                      f"({self.whole(t.region)}): the retype makes one object of "
                      f"SHARED_REGION_BITS", stop, txn)
        if t.decision == OP_ABORT and slot:
            self.note("state", f"transaction {txn} was rolled back, but the asking program on "
                      f"core {t.initiator} still holds {slot}: an abort takes the tentative "
                      f"frame back and deletes it", stop, txn)
        if t.decision == OP_ABORT and (t.initiator == 0 or t.votes.get(t.initiator) == 0):
            for problem in self.left_in_use(t.initiator, t.region):
                self.note("state", f"transaction {txn} was rolled back, but on core "
                          f"{t.initiator}, the asker's, {problem}", stop, txn)
        self.check_state(f"after the answer to transaction {txn}", stop, txn)

    def check_story(self, txn, verdict, refuser, stop) -> None:
        """Where the image tells what each answer is (STORIES), the answer is that."""
        if not 1 <= txn <= len(self.story):
            return
        want = self.story[txn - 1]
        if (verdict, signed(refuser)) == want:
            return
        if want[0] == 0:
            why = "a no is a lock refused, or on the asker's core its retype or give refused"
        elif verdict == 0:
            why = f"core {want[1]} cannot lock (or retype) it, so its vote is no"
        elif verdict != want[0]:
            why = "a no vote is the error of the call that refused"
        else:
            why = "REFUSER is the core whose no came first, core 0 for monitor 0's own"
        self.note("decision", f"monitor 0 answered transaction {txn}: {answer(verdict, refuser)}"
                  f", where the image's story (its comment) has it {answer(*want)}: {why}",
                  stop, txn)

    # --- the state ---------------------------------------------------------------------------
    def check_state(self, when, stop, hit=1) -> None:
        """Every replica and every copy of every region as the commits so far say."""
        from kernel.capservice import N_SHARED_REGIONS
        from kernel.replica import read_replicas
        replicas = read_replicas(self.system)
        missing = [core for core in range(self.n()) if core not in replicas]
        if missing:
            self.note("state", f"{when}: core {cores(missing)} has no replica (its monitor "
                      f"overwrote the magic word, or never started)", stop)
            return
        for region in range(N_SHARED_REGIONS):
            owner = self.model.get(region, (None, 0))[0]
            for core in range(self.n()):
                problems = self.problems(core, region, self.expected(region), owner)
                if problems:
                    self.note("state", f"{when}: on core {core}, {'; '.join(problems)}", stop,
                              hit)
                    return

    def problems(self, core, region, want, owner) -> list[str]:
        """What is off in core's record of region and its copy of it, against the
        record `want` and the region's owner (None: free)."""
        found = []
        state = self.copy_state(core, region)
        if owner is None:
            allowed = ("free", "in use")         # (in use: a program's page there)
        else:
            allowed = ("in use",) if core == owner else ("retyped elsewhere",)
        if state == "locked":
            found.append(f"its copy of region {region} is still locked")
        elif state not in allowed:
            hint = ""
            if allowed == ("retyped elsewhere",):
                hint = " (CAP_UNLOCK's second argument marks a copy so)"
            elif state == "retyped elsewhere":
                hint = " (only the other cores' copies are marked retyped elsewhere)"
            found.append(f"its copy of region {region} is {state}, not "
                         f"{' or '.join(allowed)}{hint}")
        got = self.record(core, region)
        if got is None or got[:3] != want[:3]:
            shown = self.said(got[:3] + (0,) if got else None)
            found.append(f"its replica says region {region} is {shown}, not {self.said(want)}")
        elif got[3] != 0:
            found.append(f"its replica still has transaction {got[3]} pending on region "
                         f"{region} (a yes vote sets REGION_PENDING; COMMIT, ABORT or the "
                         f"vote's own undo clears it)")
        return found

    def stuck(self) -> tuple[str, str] | None:
        """Why a run that did not end waits, if monitor 0 waits on a transaction:
        (reason, where to stop the replay)."""
        t = self.current
        if t is None or t.answered:
            return None
        if t.decision is None:
            waiting, step, label = t.votes, "vote", "prepare_retype"
        else:
            waiting, step, label = t.acks, "acknowledgement", \
                f"{DECISION[t.decision].lower()}_retype"
        missing = [core for core in self.others() if core not in waiting]
        if not missing:
            return None
        return (f"transaction {t.number} never ended: monitor 0 waits for the {step} of core "
                f"{cores(missing)} (does {label} reply, once its step is done?)",
                f"{label} core {missing[0]}")

    def finish(self, run) -> None:
        """After the run: every replica agrees with every other, counters too."""
        from kernel.replica import read_replicas
        replicas = read_replicas(run.system)
        if not replicas:
            return
        first = min(replicas)
        for core, replica in sorted(replicas.items()):
            mine, theirs = replica, replicas[first]
            for region, (a, b) in enumerate(zip(mine.regions, theirs.regions)):
                if a != b:
                    self.note("state", f"at the end core {core}'s replica says region {region} "
                              f"is {self.said(astuple(a))}, core {first}'s "
                              f"{self.said(astuple(b))}", "stop core 0")
                    return
            if mine.commits != theirs.commits:
                self.note("state", f"at the end core {core}'s replica counts {mine.commits} "
                          f"committed, core {first}'s {theirs.commits} (every monitor counts "
                          f"every commit it applies, on the asker's core or not)", "stop core 0")
                return
            if mine.aborts != theirs.aborts:
                self.note("state", f"at the end core {core}'s replica counts {mine.aborts} "
                          f"rolled back, core {first}'s {theirs.aborts} (every monitor counts "
                          f"every abort, whatever it voted)", "stop core 0")
                return
        if replicas[first].commits != self.commits:
            self.note("state", f"at the end every replica counts {replicas[first].commits} "
                      f"commits; monitor 0 answered {self.commits} commits", "stop core 0")

    # --- reading the machine ---------------------------------------------------------------
    def expected(self, region):
        """The record every replica must hold for `region` after the commits so far."""
        owner, version = self.model.get(region, (None, 0))
        return ("retyped", owner, version, 0) if owner is not None else ("free", -1, 0, 0)

    def n(self) -> int:
        return self.system.machine.n_cores

    def others(self) -> list[int]:
        return list(range(1, self.n()))

    def record(self, core, region):
        """(state, owner, version, pending) of region in core's replica, or None."""
        from kernel.replica import read_replicas
        replica = read_replicas(self.system).get(core)
        if replica is None or not 0 <= region < len(replica.regions):
            return None
        r = replica.regions[region]
        return (r.state, r.owner, r.version, r.pending)

    def pending_anywhere(self, core, txn):
        """The region whose record in core's replica has `txn` pending, or None."""
        from kernel.capservice import N_SHARED_REGIONS
        for region in range(N_SHARED_REGIONS):
            record = self.record(core, region)
            if record is not None and record[3] == txn:
                return region
        return None

    def whole(self, region) -> str:
        """The frame a commit of `region` gives, as holds() describes it."""
        service = self.system.machine._hypercall_handler
        obj = service.regions[0][region].obj
        return f"a frame of {obj.size} bytes at {obj.base:#x}"

    def copy_state(self, core, region) -> str:
        service = self.system.machine._hypercall_handler
        try:
            return service.region_state(core, region)
        except ValueError as error:
            return f"unknown ({error})"

    def holds(self, core, dispatcher, address) -> str:
        """What the slot holds, described; '' if empty."""
        service = self.system.machine._hypercall_handler
        cspace = service.cspaces.get((core, dispatcher))
        if cspace is None:
            return ""
        try:
            cap = cspace.lookup(address)
        except Exception:      # noqa: BLE001 -- empty, or not a slot: nothing there
            return ""
        name = cap.type.name
        if name == "FRAME":
            return f"a frame of {cap.obj.size} bytes at {cap.obj.base:#x}"
        return f"a {name} capability"

    @staticmethod
    def said(record) -> str:
        if record is None:
            return "unreadable"
        state, owner, version, pending = record
        text = f"retyped by {owner}" if state == "retyped" else state
        text += f", version {version}"
        return text + (f", pending transaction {pending}" if pending else "")



def cores(numbers) -> str:
    return ", ".join(map(str, numbers))


def answer(verdict, refuser) -> str:
    """'committed', or 'refused by core 2 with error 120'."""
    from kernel.caps.errors import ErrorCode
    if verdict == 0:
        return "committed"
    name = f" ({ErrorCode(verdict).name})" if verdict in set(ErrorCode) else ""
    return f"refused by core {signed(refuser)} with error {verdict}{name}"


def signed(word: int) -> int:
    """A 64-bit word as the signed number it holds (-1 for 2**64 - 1)."""
    return word - (1 << 64) if word >= 1 << 63 else word


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# --- running an image under watch ------------------------------------------------------------

def watched(image, topology, quantum=None, seed=None):
    """Boot with the watcher; (run, watcher)."""
    watcher = Watcher(STORIES.get(image))
    run = boot(image, topology=topology, quantum=quantum, seed=seed, max_cycles=MAX_CYCLES,
               setup=watcher.install)
    return run, watcher


def judge(runs, kinds) -> None:
    """Boot each (image, topology, quantum, seed); fail on the first finding of `kinds`
    (or of kind "protocol"), or on a run that did not end cleanly."""
    from kernel.diagnosis import user_faults
    for image, topology, quantum, seed in runs:
        run, watcher = watched(image, topology, quantum, seed)
        here = f"{image.split('/')[-1]} on {topology}" + \
            (f", seed {seed}" if seed is not None else "") + \
            (f", quantum {quantum}" if quantum is not None else "")
        missing = [line.strip() for _, line in run.console if "not written yet" in line]
        if missing:
            fail(f"{here}: {missing[0]}", run)
        if run.result.clean:
            watcher.finish(run)
        for finding in watcher.findings:
            if finding.kind in kinds or finding.kind == "protocol":
                fail(f"{here}: {finding.reason}", run, stop=finding.stop)
        died = run.system.failures()
        if died:            # a monitor killed for a fault (named where), or exited: that first
            said = user_faults(run.system) or \
                [line.strip() for _, line in run.console if "killed" in line or "exit" in line]
            fail(f"{here}: {died}{': ' + said[0] if said else ''}", run)
        stuck = None if run.result.clean else watcher.stuck()
        if stuck:
            fail(f"{here}: {stuck[0]}", run, stop=stuck[1])
        run.expect_clean()


def at(image_topology, quanta=(None,), seeds=(None,)):
    image, topology = image_topology
    return [(image, topology, quantum, seed) for quantum in quanta for seed in seeds]


# --- the tests -------------------------------------------------------------------------------

@test(points=25)
def replicas_agree_after_every_answer():
    """After every answer each replica and each core's copy of each region is as the commits say."""
    judge(at(DEMO, FAST_FIRST) + at(ASKER_0, (10_000, 7)), {"state"})


@test(points=15)
def votes_lock_and_change_nothing():
    """A yes vote holds the copy's lock, a no vote holds nothing; no replica changes on a vote."""
    judge(at(DEMO, (10_000, 13)) + at(ASKER_0) + at(SLOT_TAKEN), {"vote"})


@test(points=15)
def acknowledged_only_once_applied():
    """A participant acknowledges COMMIT or ABORT only after applying it: replica, lock, frame."""
    judge(at(DEMO, (10_000, 7)) + at(ASKER_0), {"ack"})


@test(points=15)
def decision_waits_for_every_vote():
    """Monitor 0 decides once every vote is in: COMMIT only if all said yes, ABORT otherwise."""
    judge(at(DEMO, (10_000, 7)) + at(ASKER_0) + at(SLOT_TAKEN), {"decision"})


@test(points=10)
def answer_waits_for_every_acknowledgement():
    """Monitor 0 answers the program only once every core has acknowledged the decision."""
    judge(at(DEMO, (10_000, 13)), {"answer"})


@test(points=20)
def agreement_under_random_schedules():
    """Two askers, three users, 8 and 16 cores, seeded schedules: every check holds."""
    runs = at(CONTENDED, seeds=SEEDS[:5]) + at(CONTENDED_16, seeds=(SEEDS[5], SEEDS[7]))
    judge(runs + at(DEMO, seeds=SEEDS[6:7]), {"state", "vote", "ack", "decision", "answer"})
