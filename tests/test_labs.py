"""The course's labs: every grader proven, as instructors and CI run it.

`sprat lab check` boots every lab's reference (it must score full), its
skeleton (it must not) and each recorded wrong solution (each must fail a
test: the mistakes students really make are caught).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def sprat(*args, cwd):
    env = {key: value for key, value in os.environ.items() if key != "SPRAT_LABS"}
    return subprocess.run([sys.executable, "-m", "sprat", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1800)


LABS = sorted(folder.name for folder in (ROOT / "labs").iterdir()
              if (folder / "lab.toml").is_file())


# One lab a test, so that the test runner's workers share them out (the
# whole course's check, one test, took about 3.5 minutes, the longest).
# The same check's reasons are then held against the faults each mistake
# must name (FAULTS_NAMED, below): one check serves both (graded again
# one mistake a test, they took two more CPU minutes).
@pytest.mark.parametrize("lab", LABS)
def test_every_labs_grader_holds_and_names_the_faults(lab, tmp_path):
    import json
    number = int(lab.split("-", 1)[0])
    done = sprat("lab", "check", str(number), "--json", cwd=tmp_path)
    try:
        check = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"sprat lab check {number} --json printed no JSON: {done.stderr}")
    assert done.returncode == 0 and not check["problems"], check["problems"] or done.stderr
    rows = {row["solution"]: row for row in check["rows"]}
    wrong = [unnamed_fault(rows, *case) for case in FAULTS_NAMED if case[0] == number]
    wrong = [fault for fault in wrong if fault]
    assert not wrong, f"lab {number}:\n" + "\n".join(wrong)


def unnamed_fault(rows, lab, diff, test, said) -> str | None:
    """What is wrong with how lab `lab`'s check graded mistake `diff`: it
    passed `test`, or failed it for a reason that does not say `said`."""
    reasons = rows["wrong/" + diff.removesuffix(".diff")]["reasons"]
    if test not in reasons:
        return f"{diff} passed {test} (it failed {', '.join(reasons) or 'nothing'})"
    missing = [words for words in said if words not in reasons[test]]
    if missing:
        return f"{diff}: the reason does not say {missing}: {reasons[test]}"
    return None


def test_lab_list_shows_every_lab_in_course_order(tmp_path):
    done = sprat("lab", "list", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    numbers = [int(line.split()[0]) for line in done.stdout.splitlines()[2:]
               if line.strip() and line.split()[0].isdigit()]
    assert numbers == sorted(numbers) and len(numbers) == len(LABS)


def test_a_caught_mistake_replays_in_the_debugger_on_the_students_file(tmp_path):
    """Lab 5 with the control word stored first: the failure's replay command
    boots the student's file and stops at the breakpoint the test names."""
    import json
    import shlex
    from sprat.lab import workspace
    from sprat.lab.manifest import find_lab
    lab = find_lab("5")
    _, files = workspace.wrong_files(lab, lab.folder / "wrong" / "control_word_first.diff")
    workspace.create(lab, tmp_path / "ws", files)
    done = sprat("lab", "grade", "5", "ws", "--json", "-k", "messages_arrive", cwd=tmp_path)
    failed = json.loads(done.stdout)["tests"][0]
    assert not failed["passed"] and "control word" in failed["reason"]
    command = shlex.split(failed["replay"])
    assert command[:2] == ["sprat", "debug"] and "--lab" in command and "--break" in command
    # It stops as the torn message is taken (rcx = its number + 1 there).
    message = int(failed["reason"].split("message ")[1].split()[0])
    assert command[-1].endswith(f"if $rcx == {message + 1}"), command
    script = tmp_path / "look.txt"
    script.write_text("print $rcx\n")
    replay = sprat(*command[1:], "--script", str(script), cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    assert "hit breakpoint 1" in replay.stdout
    assert "ws/userland/lib/urpc.S" in replay.stdout, "the replay must run the student's file"
    printed = replay.stdout.split("(sprat) print $rcx")[1].splitlines()[1]   # "$rcx = 22"
    assert printed.split("=")[-1].split()[0] == str(message + 1), printed


def grade_wrong_solution(tmp_path, number, diff, test):
    """Grade lab `number` with its recorded wrong solution `diff`, test `test` only."""
    import json
    from sprat.lab import workspace
    from sprat.lab.manifest import find_lab
    lab = find_lab(str(number))
    _, files = workspace.wrong_files(lab, lab.folder / "wrong" / diff)
    workspace.create(lab, tmp_path / "ws", files)
    done = sprat("lab", "grade", str(number), "ws", "--json", "-k", test, cwd=tmp_path)
    return json.loads(done.stdout)["tests"][0]


def test_a_wrong_message_replays_to_the_very_send_that_carried_it(tmp_path):
    """Lab 4, the capability flag dropped: the replay stops at the system call
    the giver made (sys_lmp_send_ep, which a solution need not route through
    sys_lmp_send), on that dispatcher, for that message."""
    import shlex
    failed = grade_wrong_solution(tmp_path, 4, "capability_flag_dropped.diff",
                                  "a_capability_goes_along")
    assert not failed["passed"]
    where = shlex.split(failed["replay"])[-1]
    assert where.startswith("sys_lmp_send_ep core 0 if $cr3 == 0x1011000 && $rsi == "), where
    word = where.split("$rsi == ")[1].split()[0]
    script = tmp_path / "look.txt"
    script.write_text("print $rsi\nprint $cr3\n")
    replay = sprat(*shlex.split(failed["replay"])[1:], "--script", str(script), cwd=tmp_path)
    assert "hit breakpoint 1" in replay.stdout, replay.stdout + replay.stderr
    printed = replay.stdout.split("(sprat) print $rsi")[1].splitlines()[1]   # "$rsi = 1"
    assert int(printed.split()[2]) == int(word, 16), printed
    assert "$cr3 = 16846848 (0x1011000)" in replay.stdout, replay.stdout


def test_a_deadlocked_core_is_reported_once_with_the_cpu_drivers_own_words(tmp_path):
    """Lab 4, a send that delivers to anyone: the ping-pong ends with every
    dispatcher waiting; the reason says so once, with the console's line."""
    failed = grade_wrong_solution(tmp_path, 4, "delivers_to_anyone.diff",
                                  "costs_no_more_than_the_reference")
    reason = failed["reason"]
    assert reason.count("stopped with exit code 3") == 1, reason
    assert "every dispatcher left waits for a message that cannot come" in reason, reason


def test_caps_lab_guest_that_stops_early_says_why_the_core_stopped(tmp_path):
    """With the skeleton, the kernel's own first retype stops core 0 before the
    program runs: the reason quotes the core's failure, not only 'stopped'."""
    import json
    from sprat.lab import workspace
    from sprat.lab.manifest import find_lab
    lab = find_lab("2")
    workspace.create(lab, tmp_path / "ws", workspace.skeleton_files(lab))
    done = sprat("lab", "grade", "2", "ws", "--json", "-k",
                 "guest_retypes_maps_and_revokes_through_system_calls", cwd=tmp_path)
    reason = json.loads(done.stdout)["tests"][0]["reason"]
    assert reason.startswith("caps_lab.S stopped after 0 invocations, before 'retype RAM: "
                             "page directory at 0x0': core 0 failed: hypercall: the service "
                             "raised NotImplementedError"), reason


# What each lab's grader must say of mistakes students made in trials, where
# it once blamed a symptom further on (a frame, a budget, a deadlock) or
# crashed: (recorded mistake in the lab's wrong/, the test that catches it,
# words its reason must say).
LAB_1_FAULTS_NAMED = [
    ("push_fault_escapes.diff", "a_frame_that_cannot_be_pushed_becomes_a_double_fault",
     ["deliver_interrupt raised PageFault", "must become _DeliveryFault"]),
    ("rsp_moved_before_the_push.diff", "a_frame_that_cannot_be_pushed_becomes_a_double_fault",
     ["the frame's RSP", "must have changed nothing"]),
    ("int3_refused_at_equal_privilege.diff", "software_interrupts_obey_the_gate_privilege",
     ["says gate 3 refused the `int`", "only a DPL below the CPL refuses"]),
    ("privilege_switched_before_the_dpl_check.diff", "software_interrupts_obey_the_gate_privilege",
     ["its CS says ring 0 was interrupted", "DPL check must come before anything changes"]),
    ("syscall_fmask_not_applied.diff", "kernel_page_faults_stay_on_the_kernel_stack",
     ["system call 1 on core 0: RFLAGS is", "expected R11 & ~FMASK"]),
    ("syscall_switches_to_rsp0.diff", "kernel_page_faults_stay_on_the_kernel_stack",
     ["system call 1 on core 0: RSP is", "SYSCALL does not switch stacks"]),
    ("syscall_lands_past_lstar.diff", "timer_interrupts_preempt_and_resume_programs",
     ["none reached syscall_entry", "LSTAR - SYSCALL_LENGTH"]),
    ("syscall_clobbers_a_register.diff", "system_calls_enter_at_lstar_and_return_intact",
     ["system call 1 on core 0: RDX is", "not calls.S's 0x2222", "no other register"]),
    ("int_n_pushes_an_error_code.diff", "software_interrupts_obey_the_gate_privilege",
     ["`int 13` from ring 3", "6 words were pushed", "`int n` pushes no error code"]),
    ("ist_slot_one_off.diff", "ist_gates_switch_to_their_own_stack",
     ["the frame is on TSS.IST2's stack", "TSS_IST1 + 8 * (n - 1)"]),
    ("rflags_cleared_before_the_push.diff", "a_frame_that_cannot_be_pushed_becomes_a_double_fault",
     ["the frame's RFLAGS", "changed RFLAGS before its push faulted"]),
    ("privilege_switched_before_the_push.diff",
     "a_frame_that_cannot_be_pushed_becomes_a_double_fault",
     ["the frame's CS", "changed CS before its push faulted"]),
    ("syscall_fmask_toggles.diff", "kernel_page_faults_stay_on_the_kernel_stack",
     ["none reached syscall_entry: after deliver_syscall RFLAGS is", "expected R11 & ~FMASK",
      "TF set"]),
    ("entry_flags_toggled.diff", "exceptions_from_user_mode_arrive_with_the_right_frame",
     ["the handler of #DB (the single-step trap: TF was set)"]),
    ("alignment_mask_typo.diff", "the_new_stack_is_aligned_to_16_bytes",
     ["aligned down to a multiple of 16 is", "& ~0xF"]),
    ("rsp0_kept_for_every_core.diff", "exceptions_from_user_mode_arrive_with_the_right_frame",
     ["the frame is on core 0's kernel stack", "not core 1's"]),
    ("rsp0_read_once_per_core.diff", "the_new_stack_is_aligned_to_16_bytes",
     ["RSP0 as an earlier delivery found it", "reads the TSS at every event"]),
    ("frame_written_to_physical_memory.diff", "kernel_page_faults_stay_on_the_kernel_stack",
     ["no frame was written with core.write_virtual"]),
    ("cpl_from_the_selectors_rpl.diff", "kernel_page_faults_stay_on_the_kernel_stack",
     ["the handler runs in ring 0, not ring 3", "nor the RPL of the gate's selector"]),
    ("ss_and_rsp_pushed_only_on_a_privilege_change.diff",
     "kernel_page_faults_stay_on_the_kernel_stack",
     ["4 words were pushed", "SS and RSP are pushed always"]),
    ("current_stack_aligned_in_place.diff", "kernel_page_faults_stay_on_the_kernel_stack",
     ["the frame's RSP", "keeps RSP as it was, before the alignment"]),
]


LAB_2_FAULTS_NAMED = [
    ("captype_before_the_table.diff", "retype_follows_the_type_table",
     ["retyping a RAM into a type 11 raised ValueError: 11 is not a valid CapType",
      "it must be refused with RETYPE_NOT_ALLOWED"]),
    ("range_wraps_at_64_bits.diff", "retype_checks_size_count_alignment_and_range",
     ["a retype into a 4 KiB FRAME at offset 2**64 - 0x1000 raised IndexError",
      "it must be refused with OUT_OF_RANGE"]),
    ("revoke_deletes_the_invoked_copy.diff", "random_sequences_agree_with_the_rules",
     ["REVOKE through the RAM", "deleted that capability too"]),
    ("mint_badge_0_clears.diff", "mint_only_removes_rights_and_badges_an_endpoint_once",
     ["made a copy with READ and badge 0, not READ and badge 7"]),
    ("endpoint_of_one_byte.diff", "retype_follows_the_type_table",
     ["retyping a DISPATCHER into an ENDPOINT made an ENDPOINT of 0x1 bytes"]),
    ("frame_into_a_cnode.diff", "retype_follows_the_type_table",
     ["your RETYPE table lets a FRAME become a CNODE"]),
    ("revoke_skips_the_dry_run.diff", "a_refused_revoke_changes_nothing",
     ["a copy of other RAM in slot 2 of the CNODE", "mdb.doomed"]),
    ("retyped_rights_of_the_first_copy.diff", "retyped_objects_carry_the_source_rights",
     ["from a copy of RAM (the original has every right) with rights READ|WRITE",
      "has rights READ|WRITE|EXECUTE|GRANT"]),
    ("revoke_drops_the_copies_flushes.diff", "revoke_deletes_every_copy_and_every_descendant",
     ["unmapped its other copy at 0x8000005000, but returned no TLB flush of it"]),
    ("revoke_others_after_the_first.diff", "revoke_deletes_every_copy_and_every_descendant",
     ["REVOKE through the RAM's second copy (root slot 2) deleted that copy"]),
    ("overlap_touching_neighbours.diff", "retype_follows_the_type_table",
     ["only touches it, end exclusive", "check_no_overlap refused it, not the table"]),
    ("overlap_counts_an_endpoint_as_a_byte.diff", "retype_follows_the_type_table",
     ["an ENDPOINT owns no memory", "check_no_overlap refused it, not the table"]),
]


LAB_3_FAULTS_NAMED = [
    ("flush_clobbers_rax.diff", "a_deleted_table_takes_its_pages_along",
     ["which is no error number", "does sys_invoke's flush (cpudriver/syscall.S) keep rax"]),
    ("flush_through_rbx.diff", "a_deleted_table_takes_its_pages_along",
     ["which is no error number", "and rbx, the trap frame"]),
    ("ram_offset_advanced_by_one.diff", "pages_map_where_asked_with_their_rights",
     ["returned -109 (MISALIGNED)", "VS_USED advances by 4096 a table"]),
    ("user_range_one_bit_short.diff", "refusals_come_back_and_change_nothing",
     ["stopped after probe_outside, in vspace_map of 0x40000000 (in the kernel's PML4 entry)",
      "the stack overflowed"]),
    ("alignment_checked_after_the_walk.diff", "refusals_come_back_and_change_nothing",
     ["vspace_map of 0x80c0003008 (not a page's address) was refused, but it left tables"
      " behind", "check the address before you make any table"]),
    ("table_remembered_before_its_map.diff", "refusals_come_back_and_change_nothing",
     ["struct vspace remembers a PD for 0x8240000000", "which holds VNODE_PT",
      "only once its map worked"]),
    ("unmap_without_a_table.diff", "an_unmapped_page_faults",
     ["vspace_unmap of 0x81c0000000, where no PT is, returned -103 (NOT_A_CNODE)",
      "expected -116 (ENTRY_EMPTY)"]),
    ("records_never_checked.diff", "a_full_vspace_refuses_a_new_table_with_enomem",
     ["vspace_map of 0x8041800000, which needs a new PT", "returned 0; expected -12 (ENOMEM)"]),
    ("enomem_after_the_map.diff", "a_full_vspace_refuses_a_new_table_with_enomem",
     ["returned -ENOMEM, but left a table behind", "13 PT and now holds 2 PD, 14 PT"]),
    ("record_written_without_a_bound.diff", "a_full_vspace_refuses_a_new_table_with_enomem",
     ["wrote past the end of struct vspace (at +0x220"]),
    ("full_check_clobbers_r15.diff", "vspace_map_keeps_the_callers_registers",
     ["vspace_map changed r15 in images/full.lst"]),
    ("slot_taken_before_the_record_check.diff", "a_full_vspace_refuses_a_new_table_with_enomem",
     ["returned -ENOMEM, but struct vspace's VS_USED went from 0xf000 to 0x10000",
      "look for a free record before you take them"]),
    ("refused_table_forgets_the_last_record.diff", "refusals_come_back_and_change_nothing",
     ["struct vspace no longer remembers the PT for 0xc160e00000",
      "forget only what you remembered"]),
    ("index_keeps_eight_bits.diff", "pages_map_where_asked_with_their_rights",
     ["0xc160f09000 (READ|EXECUTE) is not mapped; its frame is mapped at 0x8140e09000",
      "its own 9 bits"]),
    ("unmap_index_keeps_eight_bits.diff", "an_unmapped_page_faults",
     ["vspace_unmap(0xc160f0a000) returned -116 (ENTRY_EMPTY)", "entry 266 of its PT"]),
    ("range_checks_nine_bits.diff", "refusals_come_back_and_change_nothing",
     ["in vspace_map of 0x1008040002000", "bit 48 is set", "to refuse before any walk"]),
]


LAB_4_FAULTS_NAMED = [
    ("bound_off_by_one.diff", "a_dispatcher_not_waiting_gets_nothing",
     ["lmp_send to 4, a dispatcher that does not exist", "off by one"]),
    ("bound_signed.diff", "a_dispatcher_not_waiting_gets_nothing",
     ["lmp_send to -1", "compare unsigned"]),
    ("next_set_before_the_check.diff", "a_dispatcher_not_waiting_gets_nothing",
     ["was refused, yet PCV_NEXT names dispatcher", "only for a delivered message"]),
    ("capability_flag_always_set.diff", "a_capability_goes_along",
     ["rdx = 0x1, expected 0 (no capability was given)"]),
    ("ep_error_taken_for_a_receiver.diff", "a_capability_goes_along",
     ["returned -22, not -EAGAIN", "the hypercall's error as it is"]),
    ("refused_call_still_waits.diff", "messages_arrive_whole_and_in_order",
     ["from its lmp_call", "DISPATCHER_WAITING", "its call was refused"]),
    ("next_holds_the_number.diff", "the_receiver_runs_next",
     ["dispatcher 1 ran next, not 2", "the receiver's slot", "not its number"]),
    ("ep_words_popped_swapped.diff", "a_capability_goes_along",
     ["the receiver got rdi = 0x0, expected word 0 = 0x1", "in the wrong registers"]),
    ("cr3_always_written.diff", "cr3_is_written_only_when_it_changes",
     ["CR3 writes loaded the page tables loaded already (the first at cpudriver/dispatch.S:",
      "write it only when it changes"]),
    ("call_waits_before_its_send.diff", "a_dispatcher_not_waiting_gets_nothing",
     ["lmp_call to itself returned 0, not -EAGAIN", "a call to itself finds itself waiting"]),
    ("bound_checked_in_32_bits.diff", "a_dispatcher_not_waiting_gets_nothing",
     ["KERNEL PANIC", "lmp_send to 0x100000001, a dispatcher that does not exist",
      "compare all 64 bits"]),
    ("words_written_before_the_check.diff", "messages_arrive_whole_and_in_order",
     ["dispatcher 2 first ran with rdi = 0x1000000000000", "lmp_send to 2, which was refused",
      "check DCB_STATE before writing the words"]),
    ("delivers_to_an_exited_dispatcher.diff", "a_dispatcher_not_waiting_gets_nothing",
     ["lmp_send to 1 had to be refused (it had exited", "as if it had been delivered"]),
    ("send_never_asks_for_a_switch.diff", "the_receiver_runs_next",
     ["0 itself went back to user mode with PCV_NEXT naming 2", "no switch happened",
      "request_reschedule"]),
    ("refused_send_yields.diff", "a_dispatcher_not_waiting_gets_nothing",
     ["lmp_send to itself was refused, yet dispatcher 1 ran next",
      "does the refusal ask for one, request_reschedule?"]),
    ("capability_flag_read_after_the_pops.diff", "a_capability_goes_along",
     ["the receiver got rdx = 0x0, expected 1", "the hypercall's rdx"]),
    ("third_word_after_current_index.diff", "messages_arrive_whole_and_in_order",
     ["the receiver got rdx = 0x1000000, expected word 2", "PCV_SELF",
      "after a call that clobbers it"]),
    ("save_skipped_unless_runnable.diff", "messages_arrive_whole_and_in_order",
     ["came back from its lmp_recv at its program's first instruction",
      "its registers were never saved", "whatever its state"]),
    ("sender_number_before_the_check.diff", "registers_survive_calls_and_time_slices",
     ["rax was", "that is dispatcher 0's number, and its lmp_send to", "was refused meanwhile",
      "check DCB_STATE before writing the sender's number"]),
]


LAB_5_FAULTS_NAMED = [
    ("ack_before_the_copy.diff", "acks_every_half_ring",
     ["wrote 8 to the ack line when it had taken 7 messages",
      "acknowledge a message only after its words are copied out"]),
    ("send_wait_without_pause.diff", "the_sender_waits_while_the_ring_is_full",
     ["the sender, read the ack line", "its wait loop spins", "put a `pause`"]),
    ("recv_wait_without_pause.diff", "messages_arrive_once_in_order_and_whole",
     ["core 2, the receiver, read control words", "its wait loop spins", "put a `pause`"]),
    ("half_the_ring.diff", "the_sender_waits_while_the_ring_is_full",
     ["never had more than 8 messages outstanding", "it may have URPC_SLOTS = 16"]),
    ("slot_shifted_at_both_ends.diff", "messages_arrive_once_in_order_and_whole",
     ["slot 0 holds control word 32, not 33", "message n goes into slot n mod URPC_SLOTS"]),
    ("receiver_clears_the_control_word.diff", "messages_arrive_once_in_order_and_whole",
     ["core 2 wrote 0x0 at ring + 56", "only the sender writes the slots"]),
    ("copy_before_the_control_word.diff", "messages_arrive_once_in_order_and_whole",
     ["the sender stored every payload word before the control word",
      "read the control word first"]),
    ("control_word_first.diff", "messages_arrive_once_in_order_and_whole",
     ["store the control word last", "stored after the slot's control word published"]),
    ("poll_returns_only_al.diff", "messages_arrive_once_in_order_and_whole",
     ["core 1: urpc_poll took a message and returned rax = 0x1000600010001, not 1"]),
    ("payload_before_the_wait.diff", "the_sender_waits_while_the_ring_is_full",
     ["message 16's payload went into slot 0 while message 0", "had not been taken",
      "wait for room before writing any word of the slot"]),
    ("payload_stored_non_temporally.diff", "messages_arrive_once_in_order_and_whole",
     ["with a non-temporal store at urpc_send_room", "no sfence between",
      "store the payload with mov, or put an sfence before the control word"]),
    ("control_word_wraps_with_the_slot.diff", "messages_arrive_once_in_order_and_whole",
     ["message 15's control word was stored as 0, not 16", "counted on past the ring's end"]),
    ("ack_in_the_ack_lines_second_word.diff", "acks_every_half_ring",
     ["wrote 0x8 at ring + 1032", "the ack line's first word, ring + 1024"]),
    ("receiver_takes_any_nonzero_control_word.diff", "messages_arrive_once_in_order_and_whole",
     ["the receiver took message 24 when the slot's control word said 9 (message 8's)",
      "copy only once it says exactly 25"]),
    ("payload_sent_as_dwords.diff", "messages_arrive_once_in_order_and_whole",
     ["message 0 arrived with word 0 = 0x10000 (sent as 0x1000000010000)",
      "its high half lost", "a routine that moves 4 of them loses the rest"]),
    ("payload_taken_as_dwords.diff", "messages_arrive_once_in_order_and_whole",
     ["its high half lost", "a payload word is 8 bytes"]),
    ("receiver_copies_the_control_word_too.diff", "messages_arrive_once_in_order_and_whole",
     ["core 2: urpc_recv wrote past the 7 words at rsi (rsi + 56)"]),
    ("sender_copies_eight_words.diff", "messages_arrive_once_in_order_and_whole",
     ["core 0 stored 0x6472617567 into slot 0's control word at urpc_send_room+",
      "before urpc_send_commit stored 1 there", "the payload is 7 words"]),
    ("last_payload_word_after_the_control_word.diff", "messages_arrive_once_in_order_and_whole",
     ["message 0 may be copied half-written", "store the control word last",
      "payload word 6 stored after the slot's control word published the message"]),
]


LAB_6_FAULTS_NAMED = [
    ("link_crosses_even_within_the_package.diff", "the_amd_path_adds_up_its_legs",
     ["core 2 (package 1) reading a line from core 3's cache (package 1)",
      "the owner shares the requester's package: no link"]),
    ("probes_skip_the_home.diff", "the_amd_path_adds_up_its_legs",
     ["generic-4 (`sprat boot`'s machine without --topology: one package)",
      "your amd_probe_broadcast raised ValueError"]),
    ("farthest_copy_taken_as_the_last.diff", "writes_invalidate_every_other_copy",
     ["the near one on the higher-numbered core: the writer still waits for the far one",
      "the line held [0:S 4:S 5:S]): it should cost 102 cycles, yours costs 58"]),
    ("e_owner_dropped_before_the_fetch.diff", "reads_move_lines_and_downgrade_owners",
     ["core 1 should get the line from another core's cache",
      "yours got it from memory (transfers 0, memory_fills 1)"]),
    ("sharer_bit_off_by_one.diff", "writes_invalidate_every_other_copy",
     ["a write miss on a line in E on the writer's die (a shared L2)",
      "it should cost 58 cycles, yours costs 102"]),
    ("pairs_named_as_the_bench_prints_them.diff",
     "the_prediction_is_within_ten_percent_of_the_measurement",
     ["[prediction] names a pair 'shared', as `sprat bench urpc` prints it",
      "its key is the model's name, shared-cache"]),
]


LAB_7_FAULTS_NAMED = [
    ("abort-takes-frame-back-only.diff", "acknowledged_only_once_applied",
     ["core 3 acknowledged the abort of transaction 2", "region 1 is in use",
      "free when it voted yes"]),
    ("tentative-frame-one-page.diff", "replicas_agree_after_every_answer",
     ["a frame of 4096 bytes", "not the whole region 0"]),
    ("retype-error-unchecked.diff", "votes_lock_and_change_nothing",
     ["core 3 voted 104", "refused with 107", "the retype's own error"]),
    ("vote-clobbers-rbx.diff", "decision_waits_for_every_vote",
     ["says it is core 0", "keep rbx"]),
    ("coordinator-skips-own-vote.diff", "replicas_agree_after_every_answer",
     ["monitor 0 sent PREPARE for transaction 1 without voting itself"]),
    ("commits-counted-on-asker-only.diff", "replicas_agree_after_every_answer",
     ["counts 2 committed, core 0's 0", "every commit"]),
    ("region-copy-address-as-region.diff", "votes_lock_and_change_nothing",
     ["#PF", "in vote+", "userland/monitor_agree.S:"]),
    ("own-gather-takes-requests.diff", "agreement_under_random_schedules",
     ["took a request that core 3 forwarded for the acknowledgement", "gather_votes"]),
    ("give-at-commit.diff", "votes_lock_and_change_nothing",
     ["core 3, the asker's, voted yes on transaction 1",
      "holds nothing where the new frame goes", "before it votes yes"]),
    ("own-no-names-no-core.diff", "decision_waits_for_every_vote",
     ["transaction 3 was refused (error 121) by core -1", "names core 0"]),
    ("own-no-aborts-everyone.diff", "decision_waits_for_every_vote",
     ["monitor 0 sent ABORT for transaction 3, for which it sent no PREPARE",
      "its own vote was no"]),
    ("pending-before-lock-answer.diff", "votes_lock_and_change_nothing",
     ["core 2 voted no on transaction 2 but recorded it", "REGION_PENDING"]),
    ("undo-error-kept-in-rcx.diff", "votes_lock_and_change_nothing",
     ["core 3 voted 0x", "no error code at all", "clobbers"]),
    ("abort-takes-back-everywhere.diff", "acknowledged_only_once_applied",
     ["core 2's abort of transaction 4 changed what dispatcher 1 of core 2 holds at 0x10016",
      "only on the asker's core"]),
    ("every-core-retypes.diff", "decision_waits_for_every_vote",
     ["answered transaction 1: refused by core 0 with error 101", "has it committed"]),
    ("every-core-retypes.diff", "votes_lock_and_change_nothing",
     ["core 4 voted no (error 101) on transaction 2 though its copy of region 0 is free"]),
    ("give-refused-keeps-object.diff", "votes_lock_and_change_nothing",
     ["core 3, the asker's, voted no (error 105) on transaction 1", "is in use now"]),
]


LAB_8_FAULTS_NAMED = [
    ("ack-before-own-part.diff", "every_core_invalidates",
     ["core 1 acknowledged the map request before its own part",
      "came only after the acknowledgement"]),
    ("prepare-maps-nothing.diff", "every_core_invalidates",
     ["core 1 acknowledged the map request without its own part", "never ran local_map"]),
    ("invlpg-before-unmap.diff", "every_core_invalidates",
     ["ran SYS_INVLPG before unmap_page removed the PTE", "unmap first, then invlpg"]),
    ("stale-count-clobbered.diff", "every_core_invalidates",
     ["core 1 acknowledged 0 stale read(s) for itself, which made 1",
      "ACK_STALE starts as what unmap_page returned"]),
    ("stale-set-after-collect.diff", "every_core_invalidates",
     ["core 2 acknowledged 1 stale read(s) for itself and its subtree [3], which made 2",
      "nothing writes it after"]),
    ("invlpg-of-the-address.diff", "every_core_invalidates",
     ["its SYS_INVLPG was of 0x600000, not of page 1536", "not its address"]),
    ("latency-backwards.diff", "tree_uses_the_measured_latencies",
     ["core 0 reaches core 3 fastest", "latency(root, core)"]),
    ("latency-from-core-0.diff", "tree_uses_the_measured_latencies",
     ["from core 31", "but core 31 reaches core 4 fastest", "the initiator's, latency(root, core)"]),
    ("forwards-only-above-us.diff", "requests_follow_the_tree",
     ["core 4 never got the map request", "cores numbered below its aggregator"]),
    ("own-part-before-forwarding.diff", "numa_multicast_beats_multicast",
     ["an aggregator, unmapped the page before it had forwarded the request to all of its",
      "forward first"]),
    ("forward-mask-in-r8.diff", "requests_follow_the_tree",
     ["each ring fills and urpc_send waits for room (and clobbers rax rcx rdx r8)",
      "core 6 never got the map request"]),
    ("stale-kept-in-rdi.diff", "every_core_invalidates",
     ["its SYS_INVLPG was of 0x0, not of page 1536",
      "something between unmap_page (which keeps rdi) and the syscall changed it"]),
    ("forward-zeroes-participants.diff", "requests_follow_the_tree",
     ["core 5 got the map request from core 4, but its MSG_PARTICIPANTS (0x0) leaves core 5 out",
      "keeps MSG's MSG_PARTICIPANTS"]),
    ("collect-from-out-subtree.diff", "every_core_invalidates",
     ["monitor 0 answered the unmap step counting 7 of the 16 cores",
      "goes up only after take_ack has collected the subtree's"]),
    ("forward-and-wait-each.diff", "numa_multicast_beats_multicast",
     ["an aggregator, took an acknowledgement before it had forwarded the request to all of "
      "its subtree", "send to every core of the subtree first, then collect"]),
    ("prepare-falls-through.diff", "every_core_invalidates",
     ["core 1 unmapped page 1536 in the map step", "a prepare only maps it (local_map)"]),
    ("collect-without-ret.diff", "every_core_invalidates",
     ["(in local_map+12)", "the monitor died of that fault in local_map",
      "code that runs on past the region's end, without its ret?"]),
    ("stale-kept-in-r11.diff", "every_core_invalidates",
     ["core 1 acknowledged the unmap step with 582 stale read(s)",
      "a register's leftover: the syscall clobbers rcx, r11 and rax"]),
]


# Every lab's list above, as (lab, mistake, test, words).
FAULTS_NAMED = [(lab, *case) for lab, cases in ((1, LAB_1_FAULTS_NAMED), (2, LAB_2_FAULTS_NAMED),
                                                (3, LAB_3_FAULTS_NAMED), (4, LAB_4_FAULTS_NAMED),
                                                (5, LAB_5_FAULTS_NAMED), (6, LAB_6_FAULTS_NAMED),
                                                (7, LAB_7_FAULTS_NAMED), (8, LAB_8_FAULTS_NAMED))
                for case in cases]

