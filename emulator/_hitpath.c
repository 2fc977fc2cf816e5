/* The cost model's hit path in C: an accelerator for emulator/cost.py, as
 * Modules/_heapqmodule.c is for Lib/heapq.py.
 *
 * Every access to a tracked page runs a unicorn memory hook, and most of
 * them are cache hits: the core reads a line it holds, or writes a line it
 * holds Modified. In Python a hit costs ~1.6 us, half of it the crossing
 * from unicorn into Python. on_access below is registered as the memory
 * hook itself (emulator/hitpath.py), and splits the work so:
 *
 *   a hit                      served here, without Python;
 *   anything else on one line  the directory decides what it costs and
 *                              what changes (cost.py's serve(), in Python),
 *                              and this hook records the answer as it
 *                              records a hit;
 *   two lines at once, or a    all in Python (cost.py's charge()).
 *   line new to the directory
 *
 * The MOESI rules stay in one place, emulator/interconnect/coherence.py;
 * this file only recognises the two rows of its table that change no state.
 *
 * What is recorded here must be exactly what the Python path records, so
 * that a run is the same, cycle for cycle, with or without this file
 * (tests/test_hitpath.py compares them):
 *   - charge the cycles to the core's clock;
 *   - a hit: count it, for the core and for the line;
 *   - a read: remember (line, its writes so far) for parking (cost.py);
 *   - a write hit: record when it completes and by whom, count the write.
 *
 * A write hit never has to wake a parked core: a parked core read every
 * line it waits on and no write came since (cost.py checks that before
 * parking it), so it still holds a copy, and no other core can hold that
 * line Modified. The first write to it is a miss, and Python wakes it.
 *
 * Nothing is copied between C and Python: the structs below are the very
 * memory Python uses, through ctypes mirrors (SharedClock, SharedLine, Watch
 * and Window in emulator/hitpath.py). Change both sides together;
 * hitpath.py compares the layouts when it loads this module.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>

#define LINE_SHIFT 6             /* 64-byte lines (coherence.py) */
#define MAX_WATCHED_LINES 64     /* reads remembered between two pauses (hitpath.py) */
#define UC_MEM_WRITE 17          /* unicorn.h, enum uc_mem_type (checked by hitpath.py) */

struct clock {                   /* a core's clock during a quantum: SharedClock */
    int64_t start;               /* core.cycles when the quantum began */
    int64_t quantum;             /* instructions the quantum may run */
    int64_t charged;             /* cycles the cost model charged in it */
    const uint64_t *emu_counter; /* unicorn's count of instructions in it */
};

struct line {                    /* a directory entry: SharedLine, hitpath.py */
    uint64_t sharers;            /* bit c: core c holds a valid copy */
    int32_t owner;               /* core holding it M, O or E, or -1 */
    wchar_t owner_state;         /* 'M', 'O', 'E' or 'I' (ctypes.c_wchar) */
    int64_t written_at;          /* modeled time the last write completed */
    int32_t writer;              /* core that wrote it last, or -1 */
    uint64_t hits, transfers, memory_fills, invalidations, writes;
};

struct watch {                   /* lines a core read since its last pause: Watch */
    int32_t count;
    int32_t overflowed;          /* read more than MAX_WATCHED_LINES: never park */
    int64_t line[MAX_WATCHED_LINES];
    uint64_t writes[MAX_WATCHED_LINES];
};

struct window {                  /* one core's hook on one tracked range: Window */
    struct line *lines;          /* the directory's entries for the range */
    uint64_t first_line;         /* line number (address >> LINE_SHIFT) of lines[0] */
    uint64_t n_lines;
    struct clock *clock;
    uint64_t *core_hits;         /* the directory's hit counter for this core */
    struct watch *watch;
    int64_t l1_hit;              /* cycles a hit costs (the topology's) */
    int32_t core;
    PyObject *serve;             /* cost.py's serve(write, line, now): a miss's cost */
    PyObject *charge;            /* cost.py's charge(write, address, size, now) */
};

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

/* Call a function of cost.py with integer arguments; return its result as
 * an integer (None: 0). Unicorn runs with the GIL released (ctypes released
 * it to call uc_emu_start), so take it first. The functions catch their own
 * errors (they fail the core); one that escapes anyway is a bug in sprat,
 * reported as Python reports errors in callbacks. */
static int64_t call_python(PyObject *function, int n, const int64_t *values)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *args[4];
    PyObject *result = NULL;
    int64_t answer = 0;
    int made = 0;

    while (made < n && (args[made] = PyLong_FromLongLong(values[made])) != NULL)
        made++;
    if (made == n)
        result = PyObject_Vectorcall(function, args, n, NULL);
    if (result != NULL && result != Py_None)
        answer = PyLong_AsLongLong(result);
    if (PyErr_Occurred())
        PyErr_WriteUnraisable(function);
    Py_XDECREF(result);
    while (made > 0)
        Py_DECREF(args[--made]);
    PyGILState_Release(gil);
    return answer;
}

/* The memory hook unicorn calls (registered by emulator/hitpath.py). */
static void on_access(void *uc, int type, uint64_t address, int size,
                      int64_t value, void *user_data)
{
    struct window *w = user_data;
    int64_t write = type == UC_MEM_WRITE;
    uint64_t key = address >> LINE_SHIFT;
    uint64_t index = key - w->first_line;      /* wraps to huge if below the range */
    struct line *line = NULL;

    /* The record of a line the directory holds (it sets owner_state, 'I' at
     * least, when it takes the record: coherence.py, _new_line). */
    if (index < w->n_lines && (address + (uint64_t)size - 1) >> LINE_SHIFT == key
            && w->lines[index].owner_state != 0)
        line = &w->lines[index];

    if (line == NULL) {
        /* New to the directory, two lines at once, or outside the window:
         * all of it in Python, cost.py's charge(write, address, size, now). */
        int64_t args[4] = {write, (int64_t)address, size, now(w->clock)};
        call_python(w->charge, 4, args);
    } else if (!write && (line->sharers >> w->core & 1)) {
        /* A read hit (M, O, E or S). */
        (*w->core_hits)++;
        line->hits++;
        w->clock->charged += w->l1_hit;
        watch(w->watch, key, line->writes);
    } else if (write && line->owner == w->core && line->owner_state == L'M') {
        /* A write hit (E -> M is a change of state: Python's). */
        int64_t start = now(w->clock);
        (*w->core_hits)++;
        line->hits++;
        line->written_at = start + w->l1_hit;
        line->writer = w->core;
        line->writes++;
        w->clock->charged += w->l1_hit;
    } else {
        /* Not a hit: the directory decides what it costs and what changes,
         * cost.py's serve(write, line, now); recorded here as a hit is. */
        int64_t args[3] = {write, (int64_t)key, now(w->clock)};
        w->clock->charged += call_python(w->serve, 3, args);
        if (!write)
            watch(w->watch, key, line->writes);
    }
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
        "{s:(nnnnn) s:(nnnnnnnnnnn) s:(nnnnn) s:(nnnnnnnnnnn)}",
        "clock", (Py_ssize_t)sizeof(struct clock), AT(clock, start), AT(clock, quantum),
        AT(clock, charged), AT(clock, emu_counter),
        "line", (Py_ssize_t)sizeof(struct line), AT(line, sharers), AT(line, owner),
        AT(line, owner_state), AT(line, written_at), AT(line, writer), AT(line, hits),
        AT(line, transfers), AT(line, memory_fills), AT(line, invalidations), AT(line, writes),
        "watch", (Py_ssize_t)sizeof(struct watch), AT(watch, count), AT(watch, overflowed),
        AT(watch, line), AT(watch, writes),
        "window", (Py_ssize_t)sizeof(struct window), AT(window, lines), AT(window, first_line),
        AT(window, n_lines), AT(window, clock), AT(window, core_hits), AT(window, watch),
        AT(window, l1_hit), AT(window, core), AT(window, serve), AT(window, charge));
}

static int init_module(PyObject *module)
{
    return add(module, "on_access", PyLong_FromVoidPtr((void *)on_access))
        || add(module, "layouts", layouts())
        || PyModule_AddIntMacro(module, MAX_WATCHED_LINES)
        || PyModule_AddIntMacro(module, UC_MEM_WRITE) ? -1 : 0;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, init_module},
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "emulator._hitpath",
    .m_doc = "The cost model's hit path in C (see emulator/hitpath.py).",
    .m_size = 0,
    .m_slots = module_slots,
};

PyMODINIT_FUNC PyInit__hitpath(void)
{
    return PyModuleDef_Init(&module);
}
