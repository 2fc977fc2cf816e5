/* The cost model's fast path in C: an accelerator for emulator/cost.py and
 * emulator/interconnect/coherence.py, as Modules/_heapqmodule.c is for
 * Lib/heapq.py.
 *
 * Every access to a tracked page runs a unicorn memory hook. In Python an
 * access costs over a microsecond, half of it the crossing from unicorn
 * into Python. on_access below is registered as the memory hook itself
 * (emulator/hitpath.py), and splits the work so:
 *
 *   an access to one line the      served here, without Python, by the
 *   directory holds                directory's rules, mirrored below;
 *                                  after a write to a line cores are
 *                                  parked on, Python wakes them
 *                                  (cost.py's wake());
 *   two lines at once, or a line   all in Python (cost.py's charge()).
 *   new to the directory
 *
 * The MOESI rules are written for people in one place,
 * emulator/interconnect/coherence.py: read them there. serve_here() and
 * fetch() below mirror CoherenceDirectory.access, _serve and _fetch line
 * for line, and exist only to be fast; change both sides together.
 * tests/test_hitpath.py runs the same accesses through both, on their own
 * and in whole workloads, and insists on the same cycles, states and
 * counters.
 *
 * What is recorded here must be exactly what the Python path records, so
 * that a run is the same, cycle for cycle, with or without this file:
 *   - charge the cycles to the core's clock;
 *   - count hits, transfers, memory fills, invalidations and causality
 *     waits, for the core and for the line, as the directory does;
 *   - a read: remember (line, its writes so far) for parking (cost.py);
 *   - a write: record when it completes and by whom, count the write;
 *   - an instruction begun at or past the core's horizon: before its first
 *     tracked access, the core may stop before it, and nothing of that
 *     access is served or recorded. defer_here() below mirrors
 *     Core.defer_this_instruction (emulator/core.py) where that is simple,
 *     the first such stop in a quantum with nothing charged ahead, and
 *     leaves the rest to it (cost.py's defer()): where cores meet, most
 *     quanta end so, and this saves each a call into Python.
 *
 * A write goes through the core's store buffer: buffered_store() below
 * mirrors StoreBuffer.store in emulator/interconnect/storebuffer.py (read
 * the rules there), and hide() keeps a store that took other cores'
 * copies hidden from them until it commits (StoreBuffer._hide). A load by
 * a core that may read such a stale copy is left to Python
 * (Visibility.load), which rolls the bytes back for it, unless every
 * store hidden on the line is done by then (Visibility.load's first case,
 * what a URPC receiver meets once a message): the core sees them all, and
 * drops its bit here. on_read_done puts the present back after the load.
 * The instructions that drain the buffer (fences, locked instructions) are
 * rare and stay in Python (cost.py, add_fence_sites).
 *
 * Parking and waking cores stay in Python: cost.py keeps, for every
 * tracked line, how many cores are parked on it (`parked`), and this hook
 * calls its wake() after a write to a line with parked cores.
 *
 * on_pause, further down, is the hook on every `pause` instruction the
 * loader found (cost.py, add_pause_sites): a code hook, or called by the
 * block hook on_pause_block where the pause starts a block. It makes the
 * tests that begin cost.py's on_pause(), which most pauses fail (the core
 * was just woken, or read no lines it can watch, or the bytes there are
 * another dispatcher's code, read through the page tables as paging.py
 * reads them), and calls Python only to park the core.
 *
 * Nothing is copied between C and Python: the structs below are the very
 * memory Python uses, through ctypes mirrors (SharedClock, SharedLine,
 * SharedDirectory, Watch and Window in emulator/hitpath.py). Change both
 * sides together; hitpath.py compares the layouts when it loads this module.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define LINE_SHIFT 6             /* 64-byte lines (coherence.py) */
#define NO_OWNER (-1)            /* coherence.py */
#define NEVER_WRITTEN (-1)       /* coherence.py */
#define MAX_WATCHED_LINES 128    /* reads remembered between two pauses (hitpath.py) */
#define MAX_OUTSTANDING 32       /* a store buffer's ring (storebuffer.py) */
#define MAX_HIDDEN 64            /* stores a buffer keeps hidden (storebuffer.py) */
#define LINE_BYTES (1 << LINE_SHIFT)
#define UNDO_BYTES 16            /* the widest store put back here (an SSE store) */
#define UC_MEM_WRITE 17          /* unicorn.h, enum uc_mem_type (checked by hitpath.py) */
#define UC_X86_REG_CR0 50        /* unicorn/x86.h, enum uc_x86_reg (checked too) */
#define UC_X86_REG_CR3 53
#define CR0_PG ((uint64_t)1 << 31)                  /* emulator/paging.py */
#define PTE_PRESENT ((uint64_t)1 << 0)
#define PTE_LARGE ((uint64_t)1 << 7)
#define ADDRESS_MASK ((uint64_t)0x000FFFFFFFFFF000)

struct clock {                   /* a core's clock during a quantum: SharedClock */
    int64_t start;               /* core.cycles when the quantum began */
    int64_t quantum;             /* instructions the quantum may run */
    int64_t charged;             /* cycles the cost model charged in it */
    const uint64_t *emu_counter; /* unicorn's count of instructions in it */
    int64_t horizon;             /* no tracked access by an instruction begun from
                                    this time on (core.py, Clock) */
    uint64_t served;             /* *emu_counter at the last tracked access served */
    /* What defer_here() needs, and what it leaves for core.py (Clock): */
    int64_t ahead;               /* 1: cycles were charged ahead in this quantum
                                    (core.py, charge_ahead): Python decides */
    int64_t deferred;            /* 1: the quantum stopped before an instruction */
    uint8_t *memory;             /* physical memory in the host (memory.py) */
    uint64_t memory_size;
    int (*emu_stop)(void *uc);   /* unicorn's uc_emu_stop */
    int64_t undo_address;        /* a store deferred here, made all the same: */
    int64_t undo_size;           /* the bytes it overwrote, put back when the */
    uint8_t undo[UNDO_BYTES];    /* quantum ends (Core._run) */
};

struct line {                    /* a directory entry: SharedLine, hitpath.py */
    uint64_t sharers;            /* bit c: core c holds a valid copy */
    int32_t owner;               /* core holding it M, O or E, or NO_OWNER */
    wchar_t owner_state;         /* 'M', 'O', 'E' or 'I' (ctypes.c_wchar) */
    int32_t home;                /* the package whose memory holds it */
    int64_t written_at;          /* modeled time the last write completed */
    int32_t writer;              /* core that wrote it last, or NEVER_WRITTEN */
    int64_t busy_from;           /* the ordering point: transactions queued back */
    int64_t busy_until;          /* to back occupy [busy_from, busy_until) */
    int32_t busy_read;           /* 1: the last of them is a read (merge_reads) */
    uint64_t hits, transfers, memory_fills, invalidations, writes;
};

struct directory {               /* the rest of the directory: SharedDirectory */
    int64_t n_cores;
    int64_t l1_hit;              /* cycles of a hit (the topology's) */
    int64_t merge_reads;         /* the directory's merge_reads */
    int64_t bus_occupancy;       /* cycles a transaction holds the bus; 0: no bus */
    const int64_t *fetch;        /* [(home * n_cores + me) * (n_cores + 1) + source]:
                                    the directory's _fetch_cost (source n_cores: memory) */
    const int64_t *invalidate;   /* the same shape: its _invalidate_cost */
    const int32_t *die;          /* per core: its die (the bus takes what leaves it) */
    uint64_t *bus;               /* [2]: the bus's busy period (the directory's bus) */
    uint64_t *hits;              /* per core, as the directory counts them */
    uint64_t *transfers;
    uint64_t *memory_fills;
    uint64_t *invalidations;
    uint64_t *waits;             /* causality waits, in cycles */
};

struct watch {                   /* lines a core read since its last pause: Watch */
    int32_t count;
    int32_t overflowed;          /* read more than MAX_WATCHED_LINES: never park */
    int32_t woken;               /* woken from parking, or the round cut short by
                                    an interrupt: the next pause just runs */
    int64_t line[MAX_WATCHED_LINES];
    uint64_t writes[MAX_WATCHED_LINES];
};

struct hidden_store {            /* a store stale copies do not see yet: HiddenStore */
    int64_t address;             /* physical, within one line */
    int64_t size;
    int64_t done;                /* when it commits */
    uint64_t stale;              /* bit c: core c may read the line before done */
    int64_t seq;                 /* the machine's count of hidden stores: host order */
    uint8_t old[LINE_BYTES];     /* the bytes it overwrote */
};

struct hidden_line {             /* what a tracked line hides: HiddenLine */
    uint64_t cores;              /* bit c: core c may be stale (Python decides) */
    int64_t until;               /* the latest commit of a store hidden on it */
};

struct store_buffer {            /* a core's outstanding stores: StoreBuffer, storebuffer.py */
    int64_t outstanding;         /* stores in flight before the core waits */
    int64_t head;                /* index of the oldest entry in done */
    int64_t count;               /* entries in flight */
    int64_t last;                /* commit time of the youngest store so far */
    int64_t locked_at;           /* the stamp of the locked instruction running now */
    int64_t done[MAX_OUTSTANDING];   /* commit times, a ring, oldest at head */
    uint8_t *memory;             /* physical memory in the host; NULL: hide nothing */
    int64_t *sequence;           /* the machine's count of hidden stores */
    int64_t *floor;              /* stores done by then are seen by all */
    int64_t kept_head;           /* the stores it hides, a ring, oldest at kept_head */
    int64_t kept_count;
    struct hidden_store kept[MAX_HIDDEN];
    int64_t undo_address;        /* bytes a load read from a stale copy: the */
    int64_t undo_size;           /* present, put back once it has read them */
    uint8_t undo[LINE_BYTES];
    int64_t latest;              /* when its latest tracked access began */
};

struct pause_hook {              /* one core's hook on its `pause` sites: PauseHook */
    struct watch *watch;
    const struct clock *clock;   /* the core's clock (on_pause_block reads it) */
    const uint8_t *memory;       /* the machine's physical memory (memory.py) */
    uint64_t memory_size;
    int (*reg_read)(void *uc, int regid, void *value);   /* unicorn's uc_reg_read */
    PyObject *pause;             /* cost.py's on_pause(address, size): decide it all */
    PyObject *checked_pause;     /* cost.py's on_checked_pause(): decide the rest */
};

struct window {                  /* one core's hook on one tracked range: Window */
    struct line *lines;          /* the directory's entries for the range */
    const int32_t *parked;       /* per line of the range: cores parked on it (cost.py) */
    struct hidden_line *hidden;  /* per line: what it hides (storebuffer.py); NULL: nothing */
    uint64_t first_line;         /* line number (address >> LINE_SHIFT) of lines[0] */
    uint64_t n_lines;
    struct directory *directory;
    struct clock *clock;
    struct watch *watch;
    struct store_buffer *buffer;  /* the core's; NULL in fast timing: stores wait (cost.py) */
    int64_t core;
    PyObject *wake;              /* cost.py's wake(line): wakes the cores parked on it */
    PyObject *charge;            /* cost.py's charge(write, address, size, now) */
    PyObject *defer;             /* cost.py's defer(address, size, write): stop before */
};

/* --- The directory's rules (a mirror of coherence.py) --------------------- */

/* CoherenceDirectory._fetch: cycles to bring in a line `me` does not hold,
 * and count where it came from; *took_bus set if it left the die. */
static int64_t fetch(struct directory *d, int64_t me, struct line *line, uint64_t others,
                     int *took_bus)
{
    int64_t n = d->n_cores;
    const int64_t *cost = &d->fetch[((int64_t)line->home * n + me) * (n + 1)];
    int64_t source;

    if (line->owner != NO_OWNER) {                 /* M, O or E elsewhere supplies it */
        source = line->owner;
    } else {                                       /* only S copies, or none */
        source = n;
        for (uint64_t copies = others; copies; copies &= copies - 1) {
            int sharer = __builtin_ctzll(copies);  /* a clean copy on my die, if nearer */
            if (d->die[sharer] == d->die[me] && cost[sharer] < cost[source])
                source = sharer;
        }
    }
    if (source != n) {
        d->transfers[me]++;
        line->transfers++;
    } else {
        d->memory_fills[me]++;
        line->memory_fills++;
    }
    if (d->bus_occupancy && (source == n || d->die[source] != d->die[me]))
        *took_bus = 1;
    return cost[source];
}

/* CoherenceDirectory._invalidate: cycles for `me` to invalidate every other
 * copy (the farthest decides); with none, what an upgrade costs. */
static int64_t invalidate(struct directory *d, int64_t me, struct line *line, uint64_t others,
                          int *took_bus)
{
    int64_t n = d->n_cores;
    const int64_t *cost = &d->invalidate[((int64_t)line->home * n + me) * (n + 1)];
    int64_t farthest = 0;

    if (!others)
        return cost[n] > d->l1_hit ? cost[n] : d->l1_hit;
    for (uint64_t copies = others; copies; copies &= copies - 1) {
        int sharer = __builtin_ctzll(copies);
        if (cost[sharer] > farthest)
            farthest = cost[sharer];
        if (d->bus_occupancy && d->die[sharer] != d->die[me])
            *took_bus = 1;
    }
    return farthest;
}

/* CoherenceDirectory._wait_for_bus: the cycles a transaction that takes the
 * bus at `start` waits for it; the bus's busy period updated. */
static int64_t wait_for_bus(struct directory *d, int64_t start)
{
    int64_t from = (int64_t)d->bus[0], until = (int64_t)d->bus[1], wait = 0;

    if (from <= start && start < until)
        wait = until - start;
    else if (start >= until)
        d->bus[0] = (uint64_t)start;               /* the bus was free: a new busy period */
    if (start + wait + d->bus_occupancy > until)
        d->bus[1] = (uint64_t)(start + wait + d->bus_occupancy);
    return wait;
}

/* CoherenceDirectory.access, for a line the directory holds, begun at
 * modeled time `now`: the cycles it costs; its states and counters updated. */
static int64_t serve_here(struct directory *d, int64_t me, struct line *line, int write,
                          int64_t now)
{
    int64_t n = d->n_cores;
    const int64_t *cost = &d->fetch[((int64_t)line->home * n + me) * (n + 1)];
    uint64_t bit = (uint64_t)1 << me;
    uint64_t sharers = line->sharers;
    uint64_t mine = sharers & bit, others = sharers & ~bit;
    int32_t owner = line->owner, writer = line->writer;
    wchar_t state = line->owner_state;
    int64_t cycles, total, end, reaches;
    int queued, took_bus = 0;

    /* The hits (access's first test). */
    if (mine && !write) {
        d->hits[me]++;
        line->hits++;
        return d->l1_hit;
    }
    if (mine && owner == me && state != L'O') {    /* M, or E -> M */
        line->owner_state = L'M';
        d->hits[me]++;
        line->hits++;
        line->written_at = now + d->l1_hit;
        line->writer = (int32_t)me;
        line->writes++;
        return d->l1_hit;
    }

    /* A transaction: it takes its turn at the line's ordering point. */
    reaches = now;
    if (writer != me && writer != NEVER_WRITTEN && line->written_at > now)
        reaches = line->written_at;
    queued = line->busy_from <= reaches && reaches < line->busy_until;

    /* The misses (_serve). */
    if (!write) {
        cycles = fetch(d, me, line, others, &took_bus);
        line->sharers = sharers | bit;
        if (owner == NO_OWNER && !others) {        /* nobody else had it */
            line->owner = (int32_t)me;
            line->owner_state = L'E';
        } else if (state == L'M') {                /* dirty data now shared */
            line->owner_state = L'O';
        } else if (state == L'E') {                /* clean: all copies are S now */
            line->owner = NO_OWNER;
            line->owner_state = L'I';
        }
    } else {
        /* Become the only holder: invalidate every other copy, in parallel,
         * while fetching the data if we do not have it. */
        if (others) {
            int count = __builtin_popcountll(others);
            d->invalidations[me] += count;
            line->invalidations += count;
        }
        if (mine) {
            cycles = invalidate(d, me, line, others, &took_bus);
        } else {
            int64_t killing;
            cycles = fetch(d, me, line, others, &took_bus);
            killing = invalidate(d, me, line, others, &took_bus);
            if (killing > cycles)
                cycles = killing;
        }
        line->sharers = bit;
        line->owner = (int32_t)me;
        line->owner_state = L'M';
    }

    /* Its turn, causality, and the bus (access). */
    if (!queued)
        total = cycles;
    else if (d->merge_reads && !write && line->busy_read)
        total = line->busy_until - now > cycles ? line->busy_until - now : cycles;
    else
        total = line->busy_until - now + cycles;
    if (writer != me && writer != NEVER_WRITTEN
            && line->written_at + cost[writer] - now > total)
        total = line->written_at + cost[writer] - now;
    if (took_bus)
        total += wait_for_bus(d, now + total - cycles);
    d->waits[me] += total - cycles;
    end = now + total;
    if (end > line->busy_until) {
        if (!queued)
            line->busy_from = end - cycles;
        line->busy_until = end;
        line->busy_read = !write;
    }
    cycles = total;
    if (write) {
        line->written_at = now + cycles;
        line->writer = (int32_t)me;
        line->writes++;
    }
    return cycles;
}

/* --- The store buffer (a mirror of storebuffer.py) -------------------------- */

/* StoreBuffer._make_room: retire what has committed by `now`; if the buffer
 * is still full, the cycles until its oldest store commits. */
static int64_t make_room(struct store_buffer *b, int64_t now)
{
    int64_t stall = 0;

    if (b->count >= b->outstanding && b->done[b->head] > now)
        stall = b->done[b->head] - now;
    now += stall;
    while (b->count && b->done[b->head] <= now) {
        b->head = (b->head + 1) % MAX_OUTSTANDING;
        b->count--;
    }
    return stall;
}

/* StoreBuffer.make_room_to_hide: raise the machine's floor to `seen` and
 * forget the hidden stores done by then; if the ring is still full, let
 * the oldest go and raise the floor to its commit. */
static void make_room_to_hide(struct store_buffer *b, int64_t seen)
{
    if (seen > *b->floor)
        *b->floor = seen;
    while (b->kept_count && b->kept[b->kept_head].done <= *b->floor) {
        b->kept_head = (b->kept_head + 1) % MAX_HIDDEN;
        b->kept_count--;
    }
    if (b->kept_count == MAX_HIDDEN) {
        *b->floor = b->kept[b->kept_head].done;
        b->kept_head = (b->kept_head + 1) % MAX_HIDDEN;
        b->kept_count--;
    }
}

/* StoreBuffer._hide: keep the store to [address, address + size), committing
 * at `done`, hidden from the cores that may still read the line's past. The
 * caller made room (make_room_to_hide). */
static void hide(struct store_buffer *b, struct hidden_line *h, int64_t me, uint64_t others,
                 uint64_t address, int size, int64_t done)
{
    uint64_t stale = (others & ~((uint64_t)1 << me)) | h->cores;
    struct hidden_store *kept;

    if (!stale)
        return;
    kept = &b->kept[(b->kept_head + b->kept_count) % MAX_HIDDEN];
    kept->address = (int64_t)address;
    kept->size = size;
    kept->done = done;
    kept->stale = stale;
    kept->seq = (*b->sequence)++;
    memcpy(kept->old, b->memory + address, (size_t)size);
    b->kept_count++;
    h->cores |= stale;
    if (done > h->until)
        h->until = done;
}

/* StoreBuffer.store: the cycles to charge for a store of `size` bytes at
 * `address` (in `line`) begun at `now` by the instruction `stamp`; `h` the
 * line's hidden record, or NULL; no core acts before `seen` any more. */
static int64_t buffered_store(struct store_buffer *b, struct directory *d, int64_t me,
                              struct line *line, struct hidden_line *h, uint64_t address,
                              int size, int64_t now, int64_t stamp, int64_t seen)
{
    uint64_t others = line->sharers & ~((uint64_t)1 << me);
    int64_t cycles, stall, done;

    if (h != NULL)
        make_room_to_hide(b, seen);
    if (stamp == b->locked_at) {                     /* locked: it waits */
        cycles = serve_here(d, me, line, 1, now);
    } else if ((line->sharers >> me & 1) && line->owner == me
            && (line->owner_state == L'M' || line->owner_state == L'E')) {
        cycles = serve_here(d, me, line, 1, now);   /* a hit, committed in order */
        if (b->last > line->written_at)
            line->written_at = b->last;
    } else {
        stall = make_room(b, now);
        now += stall;
        done = now + serve_here(d, me, line, 1, now);
        if (b->last > done)
            done = b->last;
        if (done > line->written_at)
            line->written_at = done;
        b->done[(b->head + b->count) % MAX_OUTSTANDING] = done;
        b->count++;
        b->last = done;
        cycles = stall + d->l1_hit;
    }
    if (h != NULL)
        hide(b, h, me, others, address, size, line->written_at);
    return cycles;
}

/* --- The hook ------------------------------------------------------------ */

/* core.now() in emulator/core.py: the core's modeled time, mid-quantum. */
static int64_t now(const struct clock *clock)
{
    uint64_t ran = *clock->emu_counter;
    if (ran > (uint64_t)clock->quantum)
        ran = (uint64_t)clock->quantum;
    return clock->start + (int64_t)ran + clock->charged;
}

/* Watch.add in emulator/hitpath.py. */
static void watch(struct watch *watch, uint64_t line, uint64_t writes)
{
    if (watch->count < MAX_WATCHED_LINES) {
        watch->line[watch->count] = (int64_t)line;
        watch->writes[watch->count] = writes;
        watch->count++;
    } else {
        watch->overflowed = 1;
    }
}

/* Call a function of cost.py with integer arguments. Unicorn runs with
 * the GIL released (ctypes released it to call uc_emu_start), so take it
 * first. The functions catch their own errors (they fail the core); one
 * that escapes anyway is a bug in sprat, reported as Python reports errors
 * in callbacks. */
static void call_python(PyObject *function, int n, const int64_t *values)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *args[4];
    PyObject *result = NULL;
    int made = 0;

    while (made < n && (args[made] = PyLong_FromLongLong(values[made])) != NULL)
        made++;
    if (made == n)
        result = PyObject_Vectorcall(function, args, n, NULL);
    if (PyErr_Occurred())
        PyErr_WriteUnraisable(function);
    Py_XDECREF(result);
    while (made > 0)
        Py_DECREF(args[--made]);
    PyGILState_Release(gil);
}

/* Core.defer_this_instruction (emulator/core.py), for the instruction
 * begun past the horizon: stop the quantum before it, and note the bytes a
 * store overwrites, since the store is made all the same. Only for the
 * first stop of a quantum with nothing charged ahead (what to leave out of
 * the clock is Python's to say), and a store within memory and UNDO_BYTES,
 * on a clock that knows unicorn's emu_stop; 0 if it leaves the instruction
 * to Python. */
static int defer_here(void *uc, struct clock *clock, uint64_t address, int size, int write)
{
    int64_t counter = (int64_t)*clock->emu_counter;

    if (clock->ahead || clock->deferred || clock->emu_stop == NULL
            || (write && (size > UNDO_BYTES || address + (uint64_t)size > clock->memory_size)))
        return 0;
    if (write) {
        clock->undo_address = (int64_t)address;
        clock->undo_size = size;
        memcpy(clock->undo, clock->memory + address, (size_t)size);
    }
    clock->deferred = 1;
    if (counter - 1 < clock->quantum)      /* Core.stop_before_this_instruction */
        clock->quantum = counter - 1;
    clock->emu_stop(uc);
    return 1;
}

/* The memory hook unicorn calls (registered by emulator/hitpath.py). */
static void on_access(void *uc, int type, uint64_t address, int size,
                      int64_t value, void *user_data)
{
    struct window *w = user_data;
    int write = type == UC_MEM_WRITE;
    uint64_t key = address >> LINE_SHIFT;
    uint64_t index = key - w->first_line;      /* wraps to huge if below the range */
    struct line *line = NULL;
    int64_t cycles, start;

    /* The record of a line the directory holds (it sets owner_state, 'I' at
     * least, when it takes the record: coherence.py, _new_line). */
    if (index < w->n_lines && (address + (uint64_t)size - 1) >> LINE_SHIFT == key
            && w->lines[index].owner_state != 0)
        line = &w->lines[index];

    /* Ordered (cost.py's charge, which asks the same first): an
     * instruction begun past the horizon makes no access to a tracked line
     * before the cores ready earlier have made theirs; the quantum ends
     * before the instruction, here or in Python. Asked before anything
     * else, as charge() asks it: where cores meet, most quanta end here. */
    start = now(w->clock);
    if (start - 1 >= w->clock->horizon && w->clock->served != *w->clock->emu_counter) {
        if (defer_here(uc, w->clock, address, size, write))
            return;                            /* deferred: it runs again later */
        int64_t args[3] = {(int64_t)address, size, write};
        call_python(w->defer, 3, args);
        if (*w->clock->emu_counter > (uint64_t)w->clock->quantum)
            return;
    }
    /* A load by a core that may read a stale copy (storebuffer.py,
     * Visibility.load, which charge() asks unless a locked instruction
     * loads): if every store hidden on the line is done by now, the core
     * sees them all from now on, and its bit goes; else Python decides
     * whether the copy is stale. Not deferred (above): a deferred load must
     * leave the hidden stores as they were. */
    if (line != NULL && !write && w->hidden != NULL && (w->hidden[index].cores >> w->core & 1)) {
        if (w->hidden[index].until <= start
                && w->clock->start + (int64_t)*w->clock->emu_counter != w->buffer->locked_at)
            w->hidden[index].cores &= ~((uint64_t)1 << w->core);
        else
            line = NULL;
    }
    if (line == NULL) {
        /* New to the directory, two lines at once, outside the window, or
         * one of the above: the rest in Python, cost.py's
         * charge(write, address, size, now), which asks again whether to
         * defer, and gets the same answer. */
        int64_t args[4] = {write, (int64_t)address, size, start};
        call_python(w->charge, 4, args);
        return;
    }
    w->clock->served = *w->clock->emu_counter;
    if (w->buffer != NULL)
        w->buffer->latest = start - 1;
    if (write && w->buffer == NULL)             /* fast timing: the store waits for its line */
        cycles = serve_here(w->directory, w->core, line, 1, start);
    else if (write)
        cycles = buffered_store(w->buffer, w->directory, w->core, line,
                                w->hidden != NULL ? &w->hidden[index] : NULL, address, size,
                                start, w->clock->start + (int64_t)*w->clock->emu_counter,
                                w->clock->horizon - 1 < w->clock->start ? w->clock->horizon - 1
                                                                        : w->clock->start);
    else
        cycles = serve_here(w->directory, w->core, line, 0, start);
    w->clock->charged += cycles;
    if (!write) {
        watch(w->watch, key, line->writes);
    } else if (w->parked[index]) {
        /* Cores are parked on this line: cost.py's wake(line) wakes them. */
        int64_t args[1] = {(int64_t)key};
        call_python(w->wake, 1, args);
    }
}

/* The memory hook unicorn calls after each read of a tracked window, when
 * stores are hidden (registered by emulator/hitpath.py, user_data the core's
 * store buffer): StoreBuffer.restore, after a load that read a stale copy. */
static void on_read_done(void *uc, int type, uint64_t address, int size,
                         int64_t value, void *user_data)
{
    struct store_buffer *b = user_data;

    if (b->undo_size) {
        memcpy(b->memory + b->undo_address, b->undo, (size_t)b->undo_size);
        b->undo_size = 0;
    }
}

/* --- The pause hook ------------------------------------------------------- */

/* paging.translate in emulator/paging.py, for a read: the physical address
 * of `address` in the address space of `cr3`, or -1 where that walk fails. */
static int64_t translate(const struct pause_hook *hook, uint64_t cr0, uint64_t cr3,
                         uint64_t address)
{
    uint64_t table = cr3 & ADDRESS_MASK;

    if (!(cr0 & CR0_PG))
        return (int64_t)address;
    for (int level = 0, shift = 39; level < 4; level++, shift -= 9) {
        uint64_t at = table + ((address >> shift) & 0x1FF) * 8, entry;
        if (at + 8 > hook->memory_size)
            return -1;
        memcpy(&entry, hook->memory + at, 8);
        if (!(entry & PTE_PRESENT))
            return -1;
        if (shift == 12 || ((level == 1 || level == 2) && (entry & PTE_LARGE))) {
            uint64_t page_mask = ((uint64_t)1 << shift) - 1;
            return (int64_t)((entry & ADDRESS_MASK & ~page_mask) | (address & page_mask));
        }
        table = entry & ADDRESS_MASK;
    }
    return -1;
}

/* Are the two bytes at `address`, as the core sees memory, a `pause`
 * (f3 90)? 1 yes, 0 no, -1 cannot tell here (the walk fails, or the bytes
 * straddle two pages): Python's read_virtual will. */
static int is_pause(void *uc, const struct pause_hook *hook, uint64_t address)
{
    uint64_t cr0 = 0, cr3 = 0;
    int64_t physical;

    if ((address & 0xFFF) == 0xFFF
            || hook->reg_read(uc, UC_X86_REG_CR0, &cr0) != 0
            || hook->reg_read(uc, UC_X86_REG_CR3, &cr3) != 0)
        return -1;
    physical = translate(hook, cr0, cr3, address);
    if (physical < 0 || (uint64_t)physical + 2 > hook->memory_size)
        return -1;
    return hook->memory[physical] == 0xF3 && hook->memory[physical + 1] == 0x90;
}

/* The code hook on every `pause` site (registered by emulator/hitpath.py).
 * cost.py's on_pause() decides whether the core parks there; this makes the
 * same first tests, in the same order, and leaves Python only the rest
 * (on_checked_pause), or all of it where it cannot tell. */
static void on_pause(void *uc, uint64_t address, uint32_t size, void *user_data)
{
    struct pause_hook *hook = user_data;
    struct watch *watch = hook->watch;
    int answer;

    if (watch->woken) {                         /* resuming after a wake-up, or */
        watch->woken = 0;                       /* the round was cut short: a */
        watch->count = watch->overflowed = 0;   /* new round starts (Watch.clear()) */
        return;
    }
    if (watch->count == 0 || watch->overflowed || size != 2
            || (answer = is_pause(uc, hook, address)) == 0) {
        watch->count = watch->overflowed = 0;   /* nothing to park on: Watch.take() */
        return;
    }
    if (answer == 1) {
        call_python(hook->checked_pause, 0, NULL);
    } else {
        int64_t args[2] = {(int64_t)address, size};
        call_python(hook->pause, 2, args);
    }
}

/* The block hook on a `pause` site that starts a block on every way to it
 * (cost.py, find_pause_sites): it runs as the block starts, before unicorn's
 * counting hook has counted the pause, where a code hook runs after. So it
 * does nothing if that count will end the quantum (the code hook would not
 * run), and otherwise what on_pause does; its Python functions count the
 * pause themselves (core.py, Core.as_code_hook). */
static void on_pause_block(void *uc, uint64_t address, uint32_t size, void *user_data)
{
    struct pause_hook *hook = user_data;

    if (*hook->clock->emu_counter + 1 > (uint64_t)hook->clock->quantum)
        return;
    on_pause(uc, address, 2, user_data);        /* 2: a pause's size, if it is one */
}

/* --- The module: what Python needs to register on_access, and to check
 * that its ctypes mirrors match the structs above. --- */

/* Add `value` (a new reference, or NULL after an error) to the module. */
static int add(PyObject *module, const char *name, PyObject *value)
{
    int status = PyModule_AddObjectRef(module, name, value);
    Py_XDECREF(value);
    return status;
}

/* Each struct's size and the offset of each of its fields, in order: what
 * hitpath.py compares with its ctypes mirrors, so that a stale build of
 * this file, or a struct changed on one side only, is refused. */
#define AT(type, field) (Py_ssize_t)offsetof(struct type, field)
static PyObject *layouts(void)
{
    return Py_BuildValue(
        "{s:(nnnnnnnnnnnnnnn) s:(nnnnnnnnnnnnnnn) s:(nnnnnnnnnnnnnn) s:(nnnnnn) s:(nnnnnnnn) s:(nnnnnnnnnnnnnn)"
        " s:(nnnnnnnnnnnnnnnnn) s:(nnnnnnn) s:(nnn)}",
        "clock", (Py_ssize_t)sizeof(struct clock), AT(clock, start), AT(clock, quantum),
        AT(clock, charged), AT(clock, emu_counter), AT(clock, horizon), AT(clock, served),
        AT(clock, ahead), AT(clock, deferred), AT(clock, memory), AT(clock, memory_size),
        AT(clock, emu_stop), AT(clock, undo_address), AT(clock, undo_size), AT(clock, undo),
        "line", (Py_ssize_t)sizeof(struct line), AT(line, sharers), AT(line, owner),
        AT(line, owner_state), AT(line, home), AT(line, written_at), AT(line, writer), AT(line, busy_from),
        AT(line, busy_until), AT(line, busy_read), AT(line, hits),
        AT(line, transfers), AT(line, memory_fills), AT(line, invalidations), AT(line, writes),
        "directory", (Py_ssize_t)sizeof(struct directory), AT(directory, n_cores),
        AT(directory, l1_hit), AT(directory, merge_reads), AT(directory, bus_occupancy),
        AT(directory, fetch), AT(directory, invalidate), AT(directory, die), AT(directory, bus),
        AT(directory, hits),
        AT(directory, transfers), AT(directory, memory_fills), AT(directory, invalidations),
        AT(directory, waits),
        "watch", (Py_ssize_t)sizeof(struct watch), AT(watch, count), AT(watch, overflowed),
        AT(watch, woken), AT(watch, line), AT(watch, writes),
        "pause_hook", (Py_ssize_t)sizeof(struct pause_hook), AT(pause_hook, watch),
        AT(pause_hook, clock), AT(pause_hook, memory), AT(pause_hook, memory_size), AT(pause_hook, reg_read),
        AT(pause_hook, pause), AT(pause_hook, checked_pause),
        "window", (Py_ssize_t)sizeof(struct window), AT(window, lines), AT(window, parked),
        AT(window, hidden), AT(window, first_line), AT(window, n_lines), AT(window, directory), AT(window, clock),
        AT(window, watch), AT(window, buffer), AT(window, core), AT(window, wake),
        AT(window, charge), AT(window, defer),
        "store_buffer", (Py_ssize_t)sizeof(struct store_buffer), AT(store_buffer, outstanding),
        AT(store_buffer, head), AT(store_buffer, count), AT(store_buffer, last),
        AT(store_buffer, locked_at), AT(store_buffer, done), AT(store_buffer, memory),
        AT(store_buffer, sequence), AT(store_buffer, floor), AT(store_buffer, kept_head), AT(store_buffer, kept_count),
        AT(store_buffer, kept), AT(store_buffer, undo_address), AT(store_buffer, undo_size),
        AT(store_buffer, undo), AT(store_buffer, latest),
        "hidden_store", (Py_ssize_t)sizeof(struct hidden_store), AT(hidden_store, address),
        AT(hidden_store, size), AT(hidden_store, done), AT(hidden_store, stale),
        AT(hidden_store, seq), AT(hidden_store, old),
        "hidden_line", (Py_ssize_t)sizeof(struct hidden_line), AT(hidden_line, cores),
        AT(hidden_line, until));
}

static int init_module(PyObject *module)
{
    return add(module, "on_access", PyLong_FromVoidPtr((void *)on_access))
        || add(module, "on_pause", PyLong_FromVoidPtr((void *)on_pause))
        || add(module, "on_pause_block", PyLong_FromVoidPtr((void *)on_pause_block))
        || add(module, "on_read_done", PyLong_FromVoidPtr((void *)on_read_done))
        || add(module, "layouts", layouts())
        || PyModule_AddIntMacro(module, MAX_WATCHED_LINES)
        || PyModule_AddIntMacro(module, MAX_OUTSTANDING)
        || PyModule_AddIntMacro(module, MAX_HIDDEN)
        || PyModule_AddIntMacro(module, UNDO_BYTES)
        || PyModule_AddIntMacro(module, UC_MEM_WRITE)
        || PyModule_AddIntMacro(module, UC_X86_REG_CR0)
        || PyModule_AddIntMacro(module, UC_X86_REG_CR3) ? -1 : 0;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, init_module},
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "emulator._hitpath",
    .m_doc = "The cost model's fast path in C (see emulator/hitpath.py).",
    .m_size = 0,
    .m_slots = module_slots,
};

PyMODINIT_FUNC PyInit__hitpath(void)
{
    return PyModuleDef_Init(&module);
}
