/* taskscope._speedups: the hot path in C.
 *
 * Whole objects, each with a pure-Python twin that stays the reference (taskscope/_accel.py
 * chooses; TASKSCOPE_PURE_PYTHON=1 forces Python; docs/decisions.md, "The C design"):
 *   Intake     the caller's one queue append (Pipeline.put's fast case);
 *   TaskCall   the wrapper wrapt calls for a decorated sync function inside a run, binding
 *              methods, keyword arguments and defaults from a table made at decoration; its
 *              capture() serves the async and generator wrappers too;
 *   start_task, end_task   open / end a plain managed task (_scope's twins);
 *   ScopeBase, Ready       TaskScope's fields and its with / async with short road;
 *   TaskIter   a decorated generator's steps, behind the wrapper's ``yield from``;
 *   TaskAwait  a decorated async function's task, behind the wrapper's ``await``;
 *   convert    the dispatcher's turning of intake ops into records;
 *   flat_copy, plain_tree   the capturer's copies of values that need no walk.
 * Anything unusual (no run, a live exporter, **kwargs, values that need a walk, an error) is
 * handed to the Python code, so this file only ever does the common case. It holds no state
 * of its own beyond references handed over once by setup().
 *
 * Why one file of this size: a CPython extension module is one compilation unit here
 * (hatch_build.py compiles this file alone, and the stale-build check hashes it); the pieces
 * share the static state setup() fills in and the task layout. Each piece is a section below.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* -- what setup() hands over ---------------------------------------------------------------- */

static PyObject *task_var;       /* ContextVar: the current task */
static PyObject *run_var;        /* ContextVar: the current run */
static PyObject *settings;       /* taskscope._config.settings */
static PyObject *task_type;      /* taskscope._client.Task */
static PyObject *task_record;    /* taskscope._model.TaskRecord */
static PyObject *event_record;   /* taskscope._model.EventRecord */
static PyObject *report_error;   /* _internal.report_internal(kind, exc) */
static PyObject *next_number;    /* _ids' counter (an iterator), or a callable drawing from it */
static int task_is_base;         /* task_type derives from TaskBase */

/* Where each field of a record type lives: records are built by writing their slots, not by
 * calling the dataclass's __init__ (a Python frame per record). */
#define MAX_FIELDS 16
typedef struct {
    PyTypeObject *type;
    Py_ssize_t count;
    Py_ssize_t offsets[MAX_FIELDS];
} Layout;
static Layout task_layout, event_layout;

/* The slots of taskscope._client.Run the hot path reads and writes. */
enum { RUN_SEQ, RUN_ID, RUN_PUT, RUN_LIVE, RUN_SLOTS };
static Layout run_layout;

/* A run's slot (borrowed, NULL when unset) when run is a Run (or a subclass without a slot of
 * its own: NoopRun); *known is 0 when it is not, and the caller uses attribute lookups. */
static inline PyObject *
run_slot(PyObject *run, int slot, int *known)
{
    *known = run_layout.type != NULL && PyObject_TypeCheck(run, run_layout.type);
    return *known ? *(PyObject **)((char *)run + run_layout.offsets[slot]) : NULL;
}

enum { RUN_START, RUN_END, TASK_START, TASK_END, EVENT, CONTROL, TASK_END_RAW, TASK_DONE,
       TASK_DONE_RAW, OP_CODES };

static PyObject *s_run, *s_recording, *s_live, *s_capturer, *s_spec_capturer, *s_fast_limit,
    *s_arguments, *s_status, *s_skip_reason, *s_metadata, *s_fail_managed, *s_put, *s_append,
    *s_seq, *s_id, *s_id_attr, *s_n, *s_parent, *s_name, *s_start_ns, *s_input, *s_kind,
    *s_end_seq, *s_running, *s_completed, *s_task, *s_flat_limits, *s_task_start_kind, *s_convert_kind, *s_end_kind;
static PyObject *s_enter_slow, *s_exit_slow, *s_end_short, *s_reset_elsewhere, *s_check_name,
    *s_output, *s_begin_kind, *s_finish_kind, *s_task_kind_default;
static PyObject *s_kw_input, *s_kw_metadata, *s_kw_kind;
static PyObject *s_send, *s_throw, *s_close, *s_asend, *s_athrow, *s_aclose, *s_anext,
    *s_name_attr, *s_qualname_attr;
static PyObject *s_value, *s_label, *s_labels, *s_levels[4], *s_self_method, *s_doc_attr,
    *s_module_attr;
static PyObject *op_codes[OP_CODES];
static PyObject *empty_tuple;

static int
intern_all(void)
{
#define INTERN(var, text) if (!(var = PyUnicode_InternFromString(text))) return -1
    INTERN(s_run, "run");
    INTERN(s_recording, "recording");
    INTERN(s_live, "_live");
    INTERN(s_capturer, "capturer");
    INTERN(s_spec_capturer, "_capturer");
    INTERN(s_fast_limit, "fast_str_limit");
    INTERN(s_arguments, "arguments");
    INTERN(s_status, "status");
    INTERN(s_skip_reason, "_skip_reason");
    INTERN(s_metadata, "_metadata");
    INTERN(s_fail_managed, "_fail_managed");
    INTERN(s_put, "_put");
    INTERN(s_append, "append");
    INTERN(s_seq, "_seq");
    INTERN(s_id, "_id");
    INTERN(s_id_attr, "id");
    INTERN(s_n, "_n");
    INTERN(s_parent, "parent");
    INTERN(s_name, "name");
    INTERN(s_start_ns, "start_ns");
    INTERN(s_input, "input");
    INTERN(s_kind, "kind");
    INTERN(s_end_seq, "end_seq");
    INTERN(s_running, "running");
    INTERN(s_completed, "completed");
    INTERN(s_task, "task");
    INTERN(s_flat_limits, "flat_limits");
    INTERN(s_task_start_kind, "task-start");
    INTERN(s_convert_kind, "convert");
    INTERN(s_end_kind, "task-end");
    INTERN(s_enter_slow, "_enter_slow");
    INTERN(s_exit_slow, "_exit_slow");
    INTERN(s_end_short, "_end_short");
    INTERN(s_reset_elsewhere, "_reset_elsewhere");
    INTERN(s_check_name, "_check_name");
    INTERN(s_output, "output");
    INTERN(s_begin_kind, "begin-task");
    INTERN(s_finish_kind, "finish");
    INTERN(s_task_kind_default, "task");
    INTERN(s_kw_input, "input");
    INTERN(s_send, "send");
    INTERN(s_throw, "throw");
    INTERN(s_close, "close");
    INTERN(s_asend, "asend");
    INTERN(s_athrow, "athrow");
    INTERN(s_aclose, "aclose");
    INTERN(s_anext, "__anext__");
    INTERN(s_name_attr, "__name__");
    INTERN(s_qualname_attr, "__qualname__");
    INTERN(s_kw_metadata, "metadata");
    INTERN(s_kw_kind, "kind");
    INTERN(s_value, "value");
    INTERN(s_self_method, "_self_method");
    INTERN(s_doc_attr, "__doc__");
    INTERN(s_module_attr, "__module__");
    INTERN(s_label, "label");
    INTERN(s_labels, "_labels");
    INTERN(s_levels[0], "debug");
    INTERN(s_levels[1], "info");
    INTERN(s_levels[2], "warn");
    INTERN(s_levels[3], "error");
#undef INTERN
    if (!(empty_tuple = PyTuple_New(0))) return -1;
    for (int code = 0; code < OP_CODES; code++) {
        if (!(op_codes[code] = PyLong_FromLong(code))) return -1;
    }
    return 0;
}

/* -- small helpers --------------------------------------------------------------------------- */

static int
learn_layout(Layout *layout, PyObject *type, PyObject *names)
{
    if (!PyType_Check(type) || !PyTuple_Check(names) || PyTuple_GET_SIZE(names) > MAX_FIELDS) {
        PyErr_SetString(PyExc_TypeError, "a record type and a tuple of its field names");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        PyObject *descriptor = PyObject_GetAttr(type, PyTuple_GET_ITEM(names, i));
        if (descriptor == NULL) return -1;
        int is_slot = Py_IS_TYPE(descriptor, &PyMemberDescr_Type) &&
                      ((PyMemberDescrObject *)descriptor)->d_member->type == T_OBJECT_EX;
        if (is_slot) layout->offsets[i] = ((PyMemberDescrObject *)descriptor)->d_member->offset;
        Py_DECREF(descriptor);
        if (!is_slot) {
            PyErr_Format(PyExc_TypeError, "%R is not a slot of %R", PyTuple_GET_ITEM(names, i), type);
            return -1;
        }
    }
    Py_INCREF(type);
    Py_XSETREF(layout->type, (PyTypeObject *)type);
    layout->count = PyTuple_GET_SIZE(names);
    return 0;
}

/* A record with these field values (borrowed references; they are taken): a new reference.
 * untrack: the values are all captured data (copies), see below. */
static PyObject *
make_record(Layout *layout, PyObject **fields, int untrack)
{
    PyObject *record = layout->type->tp_alloc(layout->type, 0);
    if (record == NULL) return NULL;
    for (Py_ssize_t i = 0; i < layout->count; i++) {
        *(PyObject **)((char *)record + layout->offsets[i]) = Py_NewRef(fields[i]);
    }
    /* A record whose values are captured copies (ids, numbers, and the JSON-like data the
     * capturer made) cannot be part of a reference cycle, so the cycle collector need not
     * walk the thousands queued for export. A task's metadata values are the user's own
     * objects, so a record with metadata stays tracked. */
    if (untrack && PyObject_IS_GC(record)) PyObject_GC_UnTrack(record);
    return record;
}

static PyObject *
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return PyLong_FromLongLong((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
}

/* Hands the pending exception to Python's report_internal. 0 when it was reported and
 * cleared; -1 when it must propagate (not an Exception, or internal errors are raised). */
static int
report_internal(PyObject *kind)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception)) return -1;
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL && value != NULL) PyException_SetTraceback(value, traceback);
    PyObject *args[2] = {kind, value ? value : Py_None};
    PyObject *done = PyObject_Vectorcall(report_error, args, 2, NULL);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
    if (done == NULL) return -1;
    Py_DECREF(done);
    return 0;
}

/* -- could_hold_secret: the cheap test before redaction by shape ---------------------------- */

/* Whether a str could hold a secret by its shape: at least 4 characters with one of = : @,
 * "--", a quote followed by a comma, or the letters bearer/basic in any ASCII case. The twin
 * of taskscope._redact._could_hold_secret_py (tests hold the two together): text that passes
 * goes to Python's redactor; text that does not is kept as it is, without a call. */
enum { HINT_NONE, HINT_HIT, HINT_DASH, HINT_QUOTE, HINT_B };
static unsigned char hint_table[256];  /* 256 entries: a 1-byte string indexes it unchecked */

static void
init_hint_table(void)
{
    hint_table['='] = hint_table[':'] = hint_table['@'] = HINT_HIT;
    hint_table['-'] = HINT_DASH;
    hint_table['\''] = hint_table['"'] = HINT_QUOTE;
    hint_table['b'] = hint_table['B'] = HINT_B;
}

/* The character at j in lower case, for ASCII letters (other characters never become one). */
#define LOWER_AT(s, j) ((Py_UCS4)(s)[j] | 0x20)
/* Whether "earer" or "asic" follows position i, in any ASCII case. */
#define BEARER_OR_BASIC(s, length, i)                                                      \
    ((i + 5 < length && LOWER_AT(s, i + 1) == 'e' && LOWER_AT(s, i + 2) == 'a' &&          \
      LOWER_AT(s, i + 3) == 'r' && LOWER_AT(s, i + 4) == 'e' && LOWER_AT(s, i + 5) == 'r') || \
     (i + 4 < length && LOWER_AT(s, i + 1) == 'a' && LOWER_AT(s, i + 2) == 's' &&          \
      LOWER_AT(s, i + 3) == 'i' && LOWER_AT(s, i + 4) == 'c'))

/* The common character (no hint) costs one load, one table load and one branch; the rest is
 * out of the loop's way. */
#define SCAN_FOR_HINT(TYPE)                                                                \
    {                                                                                      \
        const TYPE *s = (const TYPE *)data;                                                \
        for (Py_ssize_t i = 0; i < length; i++) {                                          \
            Py_UCS4 c = s[i];                                                              \
            unsigned char hint = c < 256 ? hint_table[c] : HINT_NONE;                      \
            if (hint == HINT_NONE) continue;                                               \
            if (hint == HINT_HIT) return 1;                                                \
            if (hint == HINT_DASH && i + 1 < length && s[i + 1] == '-') return 1;          \
            if (hint == HINT_QUOTE && i + 1 < length && s[i + 1] == ',') return 1;         \
            if (hint == HINT_B && BEARER_OR_BASIC(s, length, i)) return 1;                 \
        }                                                                                  \
        return 0;                                                                          \
    }

static int
text_could_hold_secret(PyObject *text)
{
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    if (length < 4) return 0;
    const void *data = PyUnicode_DATA(text);
    switch (PyUnicode_KIND(text)) {
    case PyUnicode_1BYTE_KIND: SCAN_FOR_HINT(Py_UCS1)
    case PyUnicode_2BYTE_KIND: SCAN_FOR_HINT(Py_UCS2)
    default: SCAN_FOR_HINT(Py_UCS4)
    }
}

static PyObject *
could_hold_secret(PyObject *module, PyObject *text)
{
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "could_hold_secret() takes a str, not %.100s",
                     Py_TYPE(text)->tp_name);
        return NULL;
    }
    return PyBool_FromLong(text_could_hold_secret(text));
}

/* A value the capturer keeps as it is: None, bool, int, or a str within the length limit that
 * could not hold a secret by its shape. A negative limit (a redaction callback or a user's
 * value pattern is set) keeps nothing. */
static inline int
is_plain(PyObject *value, Py_ssize_t str_limit)
{
    if (str_limit < 0) return 0;
    PyTypeObject *kind = Py_TYPE(value);
    if (value == Py_None || kind == &PyLong_Type || kind == &PyBool_Type) return 1;
    return kind == &PyUnicode_Type && PyUnicode_GET_LENGTH(value) <= str_limit &&
           !text_could_hold_secret(value);
}

static Py_ssize_t
current_str_limit(PyObject *capturer)
{
    PyObject *limit = PyObject_GetAttr(capturer, s_fast_limit);
    if (limit == NULL) return -2;
    Py_ssize_t value = PyLong_AsSsize_t(limit);
    Py_DECREF(limit);
    if (value == -1 && PyErr_Occurred()) return -2;
    return value;
}

/* -- TaskBase: the fixed layout of a task handle ------------------------------------------ */

/* taskscope._client.Task derives from this when the C module is in use: the hot path writes a
 * new task's fields and the dispatcher reads them without attribute lookups. Python code sees
 * ordinary attributes (member descriptors). */
typedef struct {
    PyObject_HEAD
    PyObject *number;        /* _n: drawn from taskscope._ids.next_number */
    PyObject *run;
    PyObject *parent;
    PyObject *name;
    PyObject *input;
    PyObject *start_ns;
    PyObject *status;
    PyObject *kind;
    PyObject *ident;         /* _id: the id string, once formatted */
    PyObject *metadata;      /* _metadata */
    PyObject *skip_reason;   /* _skip_reason */
    PyObject *managed;       /* _managed */
    PyObject *live;          /* _live */
    PyObject *output;
    PyObject *seq;           /* _seq: unset until the dispatcher numbers the start */
    PyObject *end_op;        /* while one convert() runs: this task's end op in the batch */
    PyObject *early;         /* while one convert() runs: its record, awaiting its end_seq */
    PyObject *end_output;    /* ended in C while its start was still queued last: the output */
    PyObject *end_ns;        /* ...and when; done says how the output is captured */
    int done;                /* 0, or TASK_DONE / TASK_DONE_RAW: its start op is its end too */
} TaskBase;

static void
taskbase_defaults(TaskBase *self)
{
    self->status = Py_NewRef(s_running);
    self->kind = Py_NewRef(s_task);
    self->ident = Py_NewRef(Py_None);
    self->metadata = Py_NewRef(Py_None);
    self->skip_reason = Py_NewRef(Py_None);
    self->managed = Py_NewRef(Py_False);
    self->live = Py_NewRef(empty_tuple);
    self->output = Py_NewRef(Py_None);
}

static PyObject *
taskbase_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    TaskBase *self = (TaskBase *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    taskbase_defaults(self);
    return (PyObject *)self;
}

static int
taskbase_traverse(TaskBase *self, visitproc visit, void *arg)
{
    Py_VISIT(self->number);
    Py_VISIT(self->run);
    Py_VISIT(self->parent);
    Py_VISIT(self->name);
    Py_VISIT(self->input);
    Py_VISIT(self->start_ns);
    Py_VISIT(self->status);
    Py_VISIT(self->kind);
    Py_VISIT(self->ident);
    Py_VISIT(self->metadata);
    Py_VISIT(self->skip_reason);
    Py_VISIT(self->managed);
    Py_VISIT(self->live);
    Py_VISIT(self->output);
    Py_VISIT(self->seq);
    Py_VISIT(self->end_op);
    Py_VISIT(self->early);
    Py_VISIT(self->end_output);
    Py_VISIT(self->end_ns);
    if (Py_TYPE(self)->tp_flags & Py_TPFLAGS_HEAPTYPE) Py_VISIT(Py_TYPE(self));
    return 0;
}

static int
taskbase_clear(TaskBase *self)
{
    Py_CLEAR(self->number);
    Py_CLEAR(self->run);
    Py_CLEAR(self->parent);
    Py_CLEAR(self->name);
    Py_CLEAR(self->input);
    Py_CLEAR(self->start_ns);
    Py_CLEAR(self->status);
    Py_CLEAR(self->kind);
    Py_CLEAR(self->ident);
    Py_CLEAR(self->metadata);
    Py_CLEAR(self->skip_reason);
    Py_CLEAR(self->managed);
    Py_CLEAR(self->live);
    Py_CLEAR(self->output);
    Py_CLEAR(self->seq);
    Py_CLEAR(self->end_op);
    Py_CLEAR(self->early);
    Py_CLEAR(self->end_output);
    Py_CLEAR(self->end_ns);
    return 0;
}

static void
taskbase_dealloc(TaskBase *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    taskbase_clear(self);
    type->tp_free((PyObject *)self);
}

static PyMemberDef taskbase_members[] = {
    {"_n", T_OBJECT_EX, offsetof(TaskBase, number), 0, NULL},
    {"run", T_OBJECT_EX, offsetof(TaskBase, run), 0, NULL},
    {"parent", T_OBJECT_EX, offsetof(TaskBase, parent), 0, NULL},
    {"name", T_OBJECT_EX, offsetof(TaskBase, name), 0, NULL},
    {"input", T_OBJECT_EX, offsetof(TaskBase, input), 0, NULL},
    {"start_ns", T_OBJECT_EX, offsetof(TaskBase, start_ns), 0, NULL},
    {"status", T_OBJECT_EX, offsetof(TaskBase, status), 0, NULL},
    {"kind", T_OBJECT_EX, offsetof(TaskBase, kind), 0, NULL},
    {"_id", T_OBJECT_EX, offsetof(TaskBase, ident), 0, NULL},
    {"_metadata", T_OBJECT_EX, offsetof(TaskBase, metadata), 0, NULL},
    {"_skip_reason", T_OBJECT_EX, offsetof(TaskBase, skip_reason), 0, NULL},
    {"_managed", T_OBJECT_EX, offsetof(TaskBase, managed), 0, NULL},
    {"_live", T_OBJECT_EX, offsetof(TaskBase, live), 0, NULL},
    {"output", T_OBJECT_EX, offsetof(TaskBase, output), 0, NULL},
    {"_seq", T_OBJECT_EX, offsetof(TaskBase, seq), 0, NULL},
    {NULL},
};

static PyTypeObject TaskBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "taskscope._speedups.TaskBase",
    .tp_basicsize = sizeof(TaskBase),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = taskbase_new,
    .tp_traverse = (traverseproc)taskbase_traverse,
    .tp_clear = (inquiry)taskbase_clear,
    .tp_dealloc = (destructor)taskbase_dealloc,
    .tp_members = taskbase_members,
};

static inline int
is_task_base(PyObject *object)
{
    return PyObject_TypeCheck(object, &TaskBaseType);
}

/* A new task handle of task_type (a subclass of TaskBase) with these fields: a new reference. */
static PyObject *
new_task(PyObject *run, PyObject *parent, PyObject *name, PyObject *input, PyObject *metadata,
         PyObject *kind, int managed)
{
    PyTypeObject *type = (PyTypeObject *)task_type;
    PyObject *number = Py_TYPE(next_number)->tp_iternext
                           ? Py_TYPE(next_number)->tp_iternext(next_number)
                           : PyObject_CallNoArgs(next_number);
    if (number == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "the id counter ran out");
        return NULL;
    }
    PyObject *start_ns = now_ns();
    if (start_ns == NULL) {
        Py_DECREF(number);
        return NULL;
    }
    TaskBase *task = (TaskBase *)type->tp_alloc(type, 0);
    if (task == NULL) {
        Py_DECREF(number);
        Py_DECREF(start_ns);
        return NULL;
    }
    taskbase_defaults(task);
    task->number = number;
    task->start_ns = start_ns;
    task->run = Py_NewRef(run);
    task->parent = Py_NewRef(parent);
    task->name = Py_NewRef(name);
    task->input = Py_NewRef(input);
    Py_SETREF(task->metadata, Py_NewRef(metadata));
    Py_SETREF(task->kind, Py_NewRef(kind));
    Py_SETREF(task->managed, Py_NewRef(managed ? Py_True : Py_False));
    /* Until its end op is converted, the new handle is referenced by the intake and holds only
     * fresh values, so the cycle collector has nothing to find in it; walking (and promoting)
     * the hundreds queued at any moment cost more than the rest of the call. The dispatcher
     * tracks it again when it converts its end (see convert_one). */
    PyObject_GC_UnTrack(task);
    return (PyObject *)task;
}

/* -- Intake: the caller's side of the pipeline's queue --------------------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *items;     /* collections.deque */
    Py_ssize_t maxsize;
    Py_ssize_t wake_at;
    PyObject *on_wake;   /* called after the append that makes the queue wake_at long */
    PyObject *on_full;   /* called with the op instead of appending when the queue is full */
} Intake;

static int
intake_put(Intake *self, PyObject *op)
{
    PyObject *items = self->items;
    Py_INCREF(items);
    Py_ssize_t length = PyObject_Size(items);
    PyObject *done;
    if (length < 0) {
        done = NULL;
    } else if (length < self->maxsize) {
        done = PyObject_CallMethodOneArg(items, s_append, op);
        if (done != NULL && length + 1 == self->wake_at) {
            Py_DECREF(done);
            done = PyObject_CallNoArgs(self->on_wake);
        }
    } else {
        done = PyObject_CallOneArg(self->on_full, op);
    }
    Py_DECREF(items);
    if (done == NULL) return -1;
    Py_DECREF(done);
    return 0;
}

static PyObject *
intake_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "Intake takes exactly one op");
        return NULL;
    }
    if (intake_put((Intake *)self, args[0]) < 0) return NULL;
    Py_RETURN_NONE;
}

static int
intake_init(Intake *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"items", "maxsize", "wake_at", "on_wake", "on_full", NULL};
    PyObject *items, *on_wake, *on_full;
    Py_ssize_t maxsize, wake_at;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OnnOO", keywords, &items, &maxsize,
                                     &wake_at, &on_wake, &on_full))
        return -1;
    Py_INCREF(items);
    Py_INCREF(on_wake);
    Py_INCREF(on_full);
    Py_XSETREF(self->items, items);
    Py_XSETREF(self->on_wake, on_wake);
    Py_XSETREF(self->on_full, on_full);
    self->maxsize = maxsize;
    self->wake_at = wake_at;
    self->vectorcall = intake_vectorcall;
    return 0;
}

static int
intake_traverse(Intake *self, visitproc visit, void *arg)
{
    Py_VISIT(self->items);
    Py_VISIT(self->on_wake);
    Py_VISIT(self->on_full);
    return 0;
}

static int
intake_clear(Intake *self)
{
    Py_CLEAR(self->items);
    Py_CLEAR(self->on_wake);
    Py_CLEAR(self->on_full);
    return 0;
}

static void
intake_dealloc(Intake *self)
{
    PyObject_GC_UnTrack(self);
    intake_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
intake_get_items(Intake *self, void *closure)
{
    return Py_NewRef(self->items ? self->items : Py_None);
}

static int
intake_set_items(Intake *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "items cannot be deleted");
        return -1;
    }
    Py_INCREF(value);
    Py_XSETREF(self->items, value);
    return 0;
}

static PyGetSetDef intake_getset[] = {
    {"items", (getter)intake_get_items, (setter)intake_set_items, NULL, NULL},
    {NULL},
};

static PyMemberDef intake_members[] = {
    {"maxsize", T_PYSSIZET, offsetof(Intake, maxsize), 0, NULL},
    {"wake_at", T_PYSSIZET, offsetof(Intake, wake_at), 0, NULL},
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(Intake, vectorcall), READONLY, NULL},
    {NULL},
};

static PyTypeObject IntakeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "taskscope._speedups.Intake",
    .tp_basicsize = sizeof(Intake),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)intake_init,
    .tp_traverse = (traverseproc)intake_traverse,
    .tp_clear = (inquiry)intake_clear,
    .tp_dealloc = (destructor)intake_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Intake, vectorcall),
    .tp_members = intake_members,
    .tp_getset = intake_getset,
};

/* Appends op to run's intake: inline when run._put is an Intake, else through the call. */
static int
put(PyObject *run, PyObject *op)
{
    int known;
    PyObject *putter = run_slot(run, RUN_PUT, &known);
    putter = known ? Py_XNewRef(putter) : PyObject_GetAttr(run, s_put);
    if (putter == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_AttributeError, "run has no intake");
        return -1;
    }
    int status;
    if (Py_TYPE(putter) == &IntakeType) {
        status = intake_put((Intake *)putter, op);
    } else {
        PyObject *done = PyObject_CallOneArg(putter, op);
        status = done == NULL ? -1 : 0;
        Py_XDECREF(done);
    }
    Py_DECREF(putter);
    return status;
}

/* -- TaskCall: the wrapper of a decorated sync function ------------------------------------ */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *spec;          /* the decorator's _Spec: its _capturer says the fast path is safe */
    PyObject *name;
    PyObject *kind;
    PyObject *names;         /* positional parameter names, a tuple */
    PyObject *metadata;      /* a dict copied into each task, or None */
    PyObject *outside;       /* (wrapped, instance, args, kwargs): no run is current */
    PyObject *generic;       /* (wrapped, instance, args, kwargs): the frame-based wrapper */
    PyObject *capture_slow;  /* (instance, args, kwargs) -> captured input */
    PyObject *finish_slow;   /* (task, result): end a task whose output needs capturing */
    int capture_input;
    int raw_output;          /* capture_output and no process_output */
    PyObject *ok_capturer;   /* the capturer last seen to allow the fast path (spec._capturer) */
    Py_ssize_t ok_limit;     /* and its fast_str_limit */
    PyObject *unbound;       /* the instance wrapt passes for a direct call: stands for None */
    PyObject *defaults;      /* ((name, default), ...): filled in for parameters left out */
    int merge_kwargs;        /* no **kwargs parameter: keyword arguments are bound as they are */
    int method;              /* called as wrapped(self, *args) through a bound method: see
                              * method_get; the first argument is the instance */
} TaskCall;

static PyObject *
call_wrapped(PyObject *wrapped, PyObject *args, PyObject *kwargs)
{
    if (kwargs != Py_None && PyDict_Check(kwargs) && PyDict_GET_SIZE(kwargs) > 0)
        return PyObject_Call(wrapped, args, kwargs);
    return PyObject_Call(wrapped, args, NULL);
}

/* The call's arguments as {parameter: value}, as Binder.bind makes them: positional values
 * (after self/cls when wrapt passes an instance), keyword arguments in their order, then the
 * defaults left out. A new reference; Py_None (a new reference) when the call needs Binder.bind
 * itself (more positional arguments than names, or a **kwargs parameter); NULL on error. */
static PyObject *
bind_call(TaskCall *self, PyObject *instance, PyObject *args, PyObject *kwargs)
{
    Py_ssize_t count = PyTuple_GET_SIZE(self->names);
    Py_ssize_t skip = instance != Py_None && count > 0 ? 1 : 0;
    Py_ssize_t given = PyTuple_GET_SIZE(args);
    int with_kwargs = kwargs != Py_None && PyDict_Check(kwargs) && PyDict_GET_SIZE(kwargs) > 0;
    if (given > count - skip || (with_kwargs && !self->merge_kwargs) ||
        (kwargs != Py_None && !PyDict_Check(kwargs)))
        Py_RETURN_NONE;
    PyObject *bound = PyDict_New();
    if (bound == NULL) return NULL;
    for (Py_ssize_t i = 0; i < given; i++) {
        if (PyDict_SetItem(bound, PyTuple_GET_ITEM(self->names, i + skip),
                           PyTuple_GET_ITEM(args, i)) < 0)
            goto failed;
    }
    if (with_kwargs && PyDict_Update(bound, kwargs) < 0) goto failed;
    Py_ssize_t defaults = PyTuple_GET_SIZE(self->defaults);
    for (Py_ssize_t i = 0; i < defaults; i++) {
        PyObject *pair = PyTuple_GET_ITEM(self->defaults, i);
        if (PyDict_SetDefault(bound, PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1)) ==
            NULL)
            goto failed;
    }
    return bound;
failed:
    Py_DECREF(bound);
    return NULL;
}

/* The captured input, a new reference; NULL with an exception set on failure. */
static PyObject *
capture_input(TaskCall *self, PyObject *instance, PyObject *args, PyObject *kwargs)
{
    if (!self->capture_input) Py_RETURN_NONE;
    PyObject *capturer = PyObject_GetAttr(settings, s_capturer);
    if (capturer == NULL) return NULL;
    int known_good = capturer == self->ok_capturer;
    if (!known_good) {  /* configure() made a new capturer: is the fast path still safe? */
        PyObject *known = PyObject_GetAttr(self->spec, s_spec_capturer);
        if (known == NULL) {
            Py_DECREF(capturer);
            return NULL;
        }
        Py_DECREF(known);  /* only compared */
        if (known == capturer) {
            Py_ssize_t limit = current_str_limit(capturer);
            if (limit < -1) {
                Py_DECREF(capturer);
                return NULL;
            }
            Py_XSETREF(self->ok_capturer, Py_NewRef(capturer));
            self->ok_limit = limit;
            known_good = 1;
        }
    }
    if (known_good) {  /* no secret names, nothing ignored or processed, no *args */
        PyObject *bound = bind_call(self, instance, args, kwargs);
        if (bound == NULL || bound != Py_None) {
            Py_ssize_t limit = self->ok_limit, position = 0;
            PyObject *key, *value;
            int plain = 1;
            while (bound != NULL && plain && PyDict_Next(bound, &position, &key, &value))
                plain = is_plain(value, limit);
            if (bound != NULL && !plain)
                Py_SETREF(bound, PyObject_CallMethodOneArg(capturer, s_arguments, bound));
            Py_DECREF(capturer);
            return bound;
        }
        Py_DECREF(bound);
    }
    Py_DECREF(capturer);
    PyObject *call_args[3] = {instance, args, kwargs};
    return PyObject_Vectorcall(self->capture_slow, call_args, 3, NULL);
}

/* A task started in run and queued (managed: by a decorator or block, not by hand): a new
 * reference, or NULL with an exception set. */
static PyObject *
start_queued(PyObject *run, PyObject *parent, PyObject *name, PyObject *captured,
             PyObject *metadata, PyObject *kind, int managed)
{
    PyObject *task;
    if (task_is_base) {
        task = new_task(run, parent, name, captured, metadata, kind, managed);
    } else {
        PyObject *task_args[7] = {run, parent, name, captured, metadata, kind,
                                  managed ? Py_True : Py_False};
        task = PyObject_Vectorcall(task_type, task_args, 7, NULL);
    }
    if (task == NULL) return NULL;
    /* A task handle on its own in the intake is its start op: one tuple fewer per call. */
    if (put(run, task) < 0) {
        Py_DECREF(task);
        return NULL;
    }
    return task;
}

static inline PyObject *
start_managed(PyObject *run, PyObject *parent, PyObject *name, PyObject *captured,
              PyObject *metadata, PyObject *kind)
{
    return start_queued(run, parent, name, captured, metadata, kind, 1);
}

/* Opens the task: a new reference, or NULL with an exception set. */
static PyObject *
open_task(TaskCall *self, PyObject *run, PyObject *parent, PyObject *instance, PyObject *args,
          PyObject *kwargs)
{
    PyObject *captured = capture_input(self, instance, args, kwargs);
    if (captured == NULL) return NULL;
    PyObject *metadata = self->metadata == Py_None ? Py_NewRef(Py_None)
                                                   : PyDict_Copy(self->metadata);
    if (metadata == NULL) {
        Py_DECREF(captured);
        return NULL;
    }
    PyObject *task = start_managed(run, parent, self->name, captured, metadata, self->kind);
    Py_DECREF(captured);
    Py_DECREF(metadata);
    return task;
}

static PyObject *captured_flat_dict(PyObject *value);

/* Queues the end of a task completed with an output already captured (raw: a scalar the
 * dispatcher captures). When the task's start is still the last op in the intake (nothing was
 * recorded since, by any thread), the start op is marked as the end too: a leaf task costs
 * one op and no tuple. 0, or -1 with an exception set. */
static int
end_completed(PyObject *run, TaskBase *task, PyObject *output, int raw)
{
    Py_SETREF(task->status, Py_NewRef(s_completed));
    PyObject *end_ns = now_ns();
    if (end_ns == NULL) return -1;
    int known;
    PyObject *putter = run_slot(run, RUN_PUT, &known);
    Py_ssize_t last = -1;
    if (known && putter != NULL && Py_TYPE(putter) == &IntakeType) {
        PyObject *items = ((Intake *)putter)->items;
        Py_ssize_t length = items == NULL ? -1 : PyObject_Size(items);
        if (length > 0) {
            PyObject *tail = PySequence_GetItem(items, length - 1);
            if (tail == (PyObject *)task) last = length - 1;
            Py_XDECREF(tail);
        }
        if (length < 0 || PyErr_Occurred()) {
            Py_DECREF(end_ns);
            return -1;
        }
    }
    if (last >= 0) {  /* the queued start becomes start and end: no op of its own */
        Py_XSETREF(task->end_output, Py_NewRef(output));
        Py_XSETREF(task->end_ns, end_ns);
        task->done = raw ? TASK_DONE_RAW : TASK_DONE;
        return 0;
    }
    PyObject *op = PyTuple_Pack(7, op_codes[raw ? TASK_END_RAW : TASK_END], (PyObject *)task,
                                s_completed, output, Py_None, end_ns, Py_None);
    Py_DECREF(end_ns);
    if (op == NULL) return -1;
    PyObject_GC_UnTrack(op);  /* a handle and atomic values: never in a cycle */
    int status = put(run, op);
    Py_DECREF(op);
    return status;
}

static int
still_running_bare(TaskBase *task)
{
    int running = task->status == s_running ||
                  (PyUnicode_Check(task->status) && PyUnicode_Compare(task->status, s_running) == 0);
    return running && task->skip_reason == Py_None && task->metadata == Py_None;
}

/* Ends a task still running with no skip or metadata of its own as completed with result,
 * when result is a scalar (handed over raw) or a small flat dict (copied): 1. 0 when the task
 * needs the Python ending (nothing done), -1 with an exception set. */
static int
end_plain(PyObject *run, PyObject *task, PyObject *result)
{
    if (!task_is_base || !is_task_base(task) || !still_running_bare((TaskBase *)task)) return 0;
    PyTypeObject *kind = Py_TYPE(result);
    if (result == Py_None || kind == &PyLong_Type || kind == &PyBool_Type ||
        kind == &PyFloat_Type || kind == &PyUnicode_Type)
        return end_completed(run, (TaskBase *)task, result, 1) < 0 ? -1 : 1;
    if (kind == &PyDict_Type) {
        PyObject *copy = captured_flat_dict(result);
        if (copy == NULL) return -1;
        int status = 0;
        if (copy != Py_None) status = end_completed(run, (TaskBase *)task, copy, 0) < 0 ? -1 : 1;
        Py_DECREF(copy);
        return status;
    }
    return 0;
}

/* start_task(run, parent, name, input, metadata, kind, managed=True): the primitive the Python
 * wrappers (async, generators, with blocks) open a managed task with, already queued; with
 * managed false, Run.start_task's task (ended by hand). */
static PyObject *
start_task_fn(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 && nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "start_task takes (run, parent, name, input, metadata, kind, "
                        "managed=True)");
        return NULL;
    }
    if (task_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "taskscope._speedups.setup() was not called");
        return NULL;
    }
    int managed = nargs == 7 ? PyObject_IsTrue(args[6]) : 1;
    if (managed < 0) return NULL;
    return start_queued(args[0], args[1], args[2], args[3], args[4], args[5], managed);
}

/* end_task(run, task, result, captured=False): ends a plain task as completed with result and
 * says True, or does nothing and says False (the caller then ends it the Python way). result
 * is captured here (a scalar raw, a small flat dict copied), or, with captured, taken as it is
 * (a generator's list of captured items). */
static PyObject *
end_task_fn(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 && nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "end_task takes (run, task, result, captured=False)");
        return NULL;
    }
    int captured = nargs == 4 ? PyObject_IsTrue(args[3]) : 0;
    if (captured < 0) return NULL;
    if (!captured) {
        int status = end_plain(args[0], args[1], args[2]);
        if (status < 0) return NULL;
        return PyBool_FromLong(status);
    }
    if (!task_is_base || !is_task_base(args[1]) || !still_running_bare((TaskBase *)args[1]))
        Py_RETURN_FALSE;
    if (end_completed(args[0], (TaskBase *)args[1], args[2], 0) < 0) return NULL;
    Py_RETURN_TRUE;
}

/* The level when it is one of LEVELS (debug, info, warn, error), else NULL: borrowed. */
static PyObject *
known_level(PyObject *level)
{
    if (!PyUnicode_CheckExact(level)) return NULL;
    for (int i = 0; i < 4; i++) {
        if (level == s_levels[i] || PyUnicode_Compare(level, s_levels[i]) == 0) return level;
    }
    return NULL;
}

/* emit(run, type, payload, level): Run.emit's short road. Queues the event and says True when
 * the run has no live exporter, type is a str, level one of LEVELS and payload None, a small
 * flat dict or anything Capturer.value captures; False (nothing done) otherwise, and Run.emit
 * takes its Python road. The op is the one Run.emit queues, field for field. */
static PyObject *
emit_fn(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "emit takes (run, type, payload, level)");
        return NULL;
    }
    if (task_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "taskscope._speedups.setup() was not called");
        return NULL;
    }
    PyObject *run = args[0], *type = args[1], *payload = args[2], *level = args[3];
    int known;
    PyObject *live = run_slot(run, RUN_LIVE, &known);
    if (!known || (live != NULL && live != empty_tuple && PyObject_IsTrue(live) != 0) ||
        !PyUnicode_CheckExact(type) || known_level(level) == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_FALSE;
    }
    PyObject *capturer = PyObject_GetAttr(settings, s_capturer);
    if (capturer == NULL) return NULL;
    PyObject *captured = NULL, *label = NULL, *task = NULL, *occurred = NULL, *number = NULL;
    PyObject *result = NULL;
    if (payload == Py_None) {
        captured = PyDict_New();
    } else {
        captured = PyDict_CheckExact(payload) ? captured_flat_dict(payload) : Py_NewRef(Py_None);
        if (captured == Py_None) {  /* not a small flat dict: the capturer's whole road */
            Py_DECREF(captured);
            captured = PyObject_CallMethodOneArg(capturer, s_value, payload);
        }
    }
    if (captured == NULL) goto done;
    PyObject *labels = PyObject_GetAttr(capturer, s_labels);
    if (labels == NULL) goto done;
    label = PyDict_CheckExact(labels) ? PyDict_GetItemWithError(labels, type) : NULL;
    Py_DECREF(labels);
    if (label != NULL) {
        Py_INCREF(label);
    } else {
        if (PyErr_Occurred()) goto done;
        label = PyObject_CallMethodOneArg(capturer, s_label, type);
        if (label == NULL) goto done;
    }
    if (PyContextVar_Get(task_var, Py_None, &task) < 0) goto done;
    if (task != Py_None) {
        PyObject *owner = is_task_base(task) ? Py_XNewRef(((TaskBase *)task)->run)
                                             : PyObject_GetAttr(task, s_run);
        if (owner == NULL) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_AttributeError, "task has no run");
            goto done;
        }
        if (owner != run) Py_SETREF(task, Py_NewRef(Py_None));
        Py_DECREF(owner);
    }
    occurred = now_ns();
    if (occurred == NULL) goto done;
    number = Py_TYPE(next_number)->tp_iternext ? Py_TYPE(next_number)->tp_iternext(next_number)
                                               : PyObject_CallNoArgs(next_number);
    if (number == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "the id counter ran out");
        goto done;
    }
    PyObject *op = PyTuple_Pack(8, op_codes[EVENT], run, task, label, level, captured, occurred,
                                number);
    if (op == NULL) goto done;
    int status = put(run, op);
    Py_DECREF(op);
    if (status == 0) result = Py_NewRef(Py_True);
done:
    Py_DECREF(capturer);
    Py_XDECREF(captured);
    Py_XDECREF(label);
    Py_XDECREF(task);
    Py_XDECREF(occurred);
    Py_XDECREF(number);
    return result;
}

/* Ends the task after a normal return. 0, or -1 with an exception set. */
static int
close_task(TaskCall *self, PyObject *run, PyObject *task, PyObject *result)
{
    if (self->raw_output && task_is_base && still_running_bare((TaskBase *)task)) {
        PyTypeObject *kind = Py_TYPE(result);
        if (result == Py_None || kind == &PyLong_Type || kind == &PyBool_Type ||
            kind == &PyFloat_Type || kind == &PyUnicode_Type) {
            /* Completed with a scalar: handed over as it is, captured off this thread. */
            return end_completed(run, (TaskBase *)task, result, 1);
        }
        if (kind == &PyDict_Type) {
            PyObject *copy = captured_flat_dict(result);
            if (copy == NULL) return -1;
            if (copy != Py_None) {  /* a small flat dict, captured as Capturer.value would */
                int status = end_completed(run, (TaskBase *)task, copy, 0);
                Py_DECREF(copy);
                return status;
            }
            Py_DECREF(copy);
        }
    }
    PyObject *finish_args[2] = {task, result};
    PyObject *done = PyObject_Vectorcall(self->finish_slow, finish_args, 2, NULL);
    if (done == NULL) return -1;
    Py_DECREF(done);
    return 0;
}

/* The body raised: the task fails with the exception, which then goes on unchanged. */
static void
fail_task(PyObject *task)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL && value != NULL) PyException_SetTraceback(value, traceback);
    PyObject *done = PyObject_CallMethodOneArg(task, s_fail_managed, value ? value : Py_None);
    if (done == NULL) PyErr_Clear();  /* _fail_managed reports its own errors */
    Py_XDECREF(done);
    PyErr_Restore(type, value, traceback);
}

static PyObject *
taskcall_vectorcall(PyObject *op_self, PyObject *const *argv, size_t nargsf, PyObject *kwnames)
{
    TaskCall *self = (TaskCall *)op_self;
    if (PyVectorcall_NARGS(nargsf) != 4 || kwnames != NULL || !PyTuple_Check(argv[2])) {
        PyErr_SetString(PyExc_TypeError, "TaskCall takes (wrapped, instance, args, kwargs)");
        return NULL;
    }
    PyObject *wrapped = argv[0], *instance = argv[1], *args = argv[2], *kwargs = argv[3];
    if (instance == self->unbound) instance = Py_None;
    /* The method road (see method_get): called as wrapped(self, *args), the first argument is
     * the instance; the body is called with every argument, the rest is what the task binds,
     * and the Python fallbacks get what wrapt's bound wrapper would give them. */
    PyObject *all_args = args, *rest = NULL, *bound_method = NULL;
    if (self->method && instance == Py_None && PyTuple_GET_SIZE(args) > 0) {
        instance = PyTuple_GET_ITEM(args, 0);
        rest = PyTuple_GetSlice(args, 1, PyTuple_GET_SIZE(args));
        if (rest == NULL) return NULL;
        args = rest;
    }
    PyObject *call_args[4] = {wrapped, instance, args, kwargs};  /* for the Python fallbacks */
#define BIND_FOR_FALLBACK()                                                                     \
    if (rest != NULL && bound_method == NULL) {                                                \
        if ((bound_method = PyMethod_New(wrapped, instance)) == NULL) goto done;               \
        call_args[0] = bound_method;                                                           \
    }
    PyObject *parent = NULL, *run = NULL, *result = NULL, *task = NULL, *token = NULL, *flag;
    /* Any failure of taskscope's own before the call is reported (logged once) and the call
     * goes on unrecorded: the caller never sees it. */
    if (PyContextVar_Get(task_var, Py_None, &parent) < 0) goto bookkeeping_failed;
    if (parent == Py_None) {
        if (PyContextVar_Get(run_var, Py_None, &run) < 0) goto bookkeeping_failed;
        if (run == Py_None) {  /* outside any run: a run of its own, or a pass-through */
            BIND_FOR_FALLBACK();
            result = PyObject_Vectorcall(self->outside, call_args, 4, NULL);
            goto done;
        }
    } else {
        run = is_task_base(parent) ? Py_XNewRef(((TaskBase *)parent)->run)
                                   : PyObject_GetAttr(parent, s_run);
        if (run == NULL) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_AttributeError, "task has no run");
            goto bookkeeping_failed;
        }
    }
    int recording = 1;  /* a Run records; its subclasses (NoopRun) say so themselves */
    if ((PyTypeObject *)Py_TYPE(run) != run_layout.type) {
        flag = PyObject_GetAttr(run, s_recording);
        recording = flag == NULL ? -1 : PyObject_IsTrue(flag);
        Py_XDECREF(flag);
    }
    if (recording < 0) goto bookkeeping_failed;
    if (recording == 0) {
        result = call_wrapped(wrapped, all_args, kwargs);
        goto done;
    }
    int known;
    flag = run_slot(run, RUN_LIVE, &known);
    flag = known ? Py_XNewRef(flag) : PyObject_GetAttr(run, s_live);
    int live = flag == NULL ? -1 : PyObject_IsTrue(flag);
    if (flag == NULL && !PyErr_Occurred()) live = 0;
    Py_XDECREF(flag);
    if (live < 0) goto bookkeeping_failed;
    if (live > 0) {  /* a live exporter (OpenTelemetry) needs the frame-based path */
        BIND_FOR_FALLBACK();
        result = PyObject_Vectorcall(self->generic, call_args, 4, NULL);
        goto done;
    }
    task = open_task(self, run, parent, instance, args, kwargs);
    if (task == NULL) goto bookkeeping_failed;
    token = PyContextVar_Set(task_var, task);
    if (token == NULL) goto bookkeeping_failed;
    result = call_wrapped(wrapped, all_args, kwargs);
    if (result == NULL) {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        if (PyContextVar_Reset(task_var, token) < 0) PyErr_Clear();
        PyErr_Restore(type, value, traceback);
        fail_task(task);
    } else {
        if (PyContextVar_Reset(task_var, token) < 0 ||
            close_task(self, run, task, result) < 0) {
            if (report_internal(s_end_kind) < 0) Py_CLEAR(result);
        }
    }
    goto done;
bookkeeping_failed:
    if (report_internal(s_task_start_kind) == 0) result = call_wrapped(wrapped, all_args, kwargs);
done:
    Py_XDECREF(rest);
    Py_XDECREF(bound_method);
    Py_XDECREF(token);
    Py_XDECREF(task);
    Py_XDECREF(parent);
    Py_XDECREF(run);
    return result;
#undef BIND_FOR_FALLBACK
}

static int
taskcall_init(TaskCall *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"spec", "name", "kind", "names", "metadata", "outside", "generic",
                               "capture_slow", "finish_slow", "capture_input", "raw_output",
                               "unbound", "defaults", "merge_kwargs", "method", NULL};
    PyObject *spec, *name, *kind, *names, *metadata, *outside, *generic, *capture_slow,
        *finish_slow, *unbound, *defaults = empty_tuple;
    int capture, raw_output, merge_kwargs = 0, method = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OUUO!OOOOOppO|O!pp", keywords, &spec, &name,
                                     &kind, &PyTuple_Type, &names, &metadata, &outside, &generic,
                                     &capture_slow, &finish_slow, &capture, &raw_output,
                                     &unbound, &PyTuple_Type, &defaults, &merge_kwargs, &method))
        return -1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(defaults); i++) {
        PyObject *pair = PyTuple_GET_ITEM(defaults, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "defaults must be (name, value) pairs");
            return -1;
        }
    }
    if (metadata != Py_None && !PyDict_Check(metadata)) {
        PyErr_SetString(PyExc_TypeError, "metadata must be a dict or None");
        return -1;
    }
#define KEEP(field) Py_INCREF(field); Py_XSETREF(self->field, field)
    KEEP(spec);
    KEEP(name);
    KEEP(kind);
    KEEP(names);
    KEEP(metadata);
    KEEP(outside);
    KEEP(generic);
    KEEP(capture_slow);
    KEEP(finish_slow);
    KEEP(unbound);
    KEEP(defaults);
#undef KEEP
    self->merge_kwargs = merge_kwargs;
    self->method = method;
    self->capture_input = capture;
    self->raw_output = raw_output;
    self->vectorcall = taskcall_vectorcall;
    return 0;
}

static int
taskcall_traverse(TaskCall *self, visitproc visit, void *arg)
{
    Py_VISIT(self->spec);
    Py_VISIT(self->name);
    Py_VISIT(self->kind);
    Py_VISIT(self->names);
    Py_VISIT(self->metadata);
    Py_VISIT(self->outside);
    Py_VISIT(self->generic);
    Py_VISIT(self->capture_slow);
    Py_VISIT(self->finish_slow);
    Py_VISIT(self->ok_capturer);
    Py_VISIT(self->unbound);
    Py_VISIT(self->defaults);
    return 0;
}

static int
taskcall_clear(TaskCall *self)
{
    Py_CLEAR(self->spec);
    Py_CLEAR(self->name);
    Py_CLEAR(self->kind);
    Py_CLEAR(self->names);
    Py_CLEAR(self->metadata);
    Py_CLEAR(self->outside);
    Py_CLEAR(self->generic);
    Py_CLEAR(self->capture_slow);
    Py_CLEAR(self->finish_slow);
    Py_CLEAR(self->ok_capturer);
    Py_CLEAR(self->unbound);
    Py_CLEAR(self->defaults);
    return 0;
}

static void
taskcall_dealloc(TaskCall *self)
{
    PyObject_GC_UnTrack(self);
    taskcall_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* capture(instance, args, kwargs): the captured input of a call, as the wrapper captures it;
 * what the async and generator wrappers (in Python) capture their inputs with. */
static PyObject *
taskcall_capture(PyObject *op_self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "capture takes (instance, args: tuple, kwargs)");
        return NULL;
    }
    TaskCall *self = (TaskCall *)op_self;
    PyObject *instance = args[0] == self->unbound ? Py_None : args[0];
    return capture_input(self, instance, args[1], args[2]);
}

static PyMethodDef taskcall_methods[] = {
    {"capture", (PyCFunction)(void (*)(void))taskcall_capture, METH_FASTCALL,
     "The captured input of a call: capture(instance, args, kwargs)."},
    {NULL},
};

static PyMemberDef taskcall_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(TaskCall, vectorcall), READONLY, NULL},
    {NULL},
};

static PyTypeObject TaskCallType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "taskscope._speedups.TaskCall",
    .tp_basicsize = sizeof(TaskCall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)taskcall_init,
    .tp_traverse = (traverseproc)taskcall_traverse,
    .tp_clear = (inquiry)taskcall_clear,
    .tp_dealloc = (destructor)taskcall_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(TaskCall, vectorcall),
    .tp_members = taskcall_members,
    .tp_methods = taskcall_methods,
};


/* -- TracedCall: the wrapt wrapper of a decorated coroutine or (async) generator function ----- */

/* What the Python ``wrapper`` of _decorator._coroutine_wrapper and of _generators'
 * generator_wrapper / async_generator_wrapper does (their twins), without its Python frames:
 * capture the inputs at call time (with the TaskCall's argument table when a run is current,
 * else through the opener's prepare, which knows about auto_run and disabled), call the
 * function, and hand what it made to ``traced``, the Python coroutine or generator that runs it
 * as a task (it must stay a real coroutine or generator):
 *   coroutines:  traced(coroutine, captured)
 *   generators:  traced(generator, captured, origin, run, parent), named after the task, with
 *                origin the caller's context copied, parent the current task and run the one a
 *                task opened now records into (None when it cannot take the short road). */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *capture;  /* a TaskCall (its capture), or any capture(instance, args, kwargs) */
    PyObject *prepare;  /* opener.prepare(instance, args, kwargs): no run is current */
    PyObject *traced;
    PyObject *name;     /* a generator's task name, or None for a coroutine function */
} TracedCall;

static int short_road_run(PyObject **run_out, PyObject **parent_out);

/* traced(generator, captured, origin, run, parent), named: a new reference, or NULL. */
static PyObject *
traced_generator(TracedCall *self, PyObject *made, PyObject *captured)
{
    PyObject *run = NULL, *parent = NULL, *result = NULL;
    PyObject *origin = PyContext_CopyCurrent();
    if (origin == NULL) return NULL;
    int found = short_road_run(&run, &parent);
    if (found < 0) goto done;
    if (found == 0) {
        run = Py_NewRef(Py_None);
        if (PyContextVar_Get(task_var, Py_None, &parent) < 0) goto done;
    }
    PyObject *call_args[5] = {made, captured, origin, run, parent};
    result = PyObject_Vectorcall(self->traced, call_args, 5, NULL);
    if (result != NULL && (PyObject_SetAttr(result, s_name_attr, self->name) < 0 ||
                           PyObject_SetAttr(result, s_qualname_attr, self->name) < 0))
        Py_CLEAR(result);
done:
    Py_DECREF(origin);
    Py_XDECREF(run);
    Py_XDECREF(parent);
    return result;
}

static PyObject *
tcall_vectorcall(PyObject *op_self, PyObject *const *argv, size_t nargsf, PyObject *kwnames)
{
    TracedCall *self = (TracedCall *)op_self;
    if (PyVectorcall_NARGS(nargsf) != 4 || kwnames != NULL || !PyTuple_Check(argv[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "TracedCall takes (wrapped, instance, args: tuple, kwargs)");
        return NULL;
    }
    PyObject *run, *captured;
    if (PyContextVar_Get(run_var, Py_None, &run) < 0) return NULL;
    Py_DECREF(run);  /* only compared */
    if (run == Py_None) captured = PyObject_Vectorcall(self->prepare, argv + 1, 3, NULL);
    else if (Py_IS_TYPE(self->capture, &TaskCallType))
        captured = taskcall_capture(self->capture, argv + 1, 3);
    else captured = PyObject_Vectorcall(self->capture, argv + 1, 3, NULL);
    if (captured == NULL) return NULL;
    PyObject *made = call_wrapped(argv[0], argv[2], argv[3]);
    PyObject *result = NULL;
    if (made != NULL && self->name == Py_None) {
        PyObject *pair[2] = {made, captured};
        result = PyObject_Vectorcall(self->traced, pair, 2, NULL);
    }
    else if (made != NULL) {
        result = traced_generator(self, made, captured);
    }
    Py_XDECREF(made);
    Py_DECREF(captured);
    return result;
}

static int
tcall_init(TracedCall *self, PyObject *args, PyObject *kwargs)
{
    PyObject *capture, *prepare, *traced, *name = Py_None;
    if (!PyArg_ParseTuple(args, "OOO|O:TracedCall", &capture, &prepare, &traced, &name))
        return -1;
    if (name != Py_None && !PyUnicode_Check(name)) {
        PyErr_SetString(PyExc_TypeError, "TracedCall's name is a str or None");
        return -1;
    }
    Py_XSETREF(self->capture, Py_NewRef(capture));
    Py_XSETREF(self->prepare, Py_NewRef(prepare));
    Py_XSETREF(self->traced, Py_NewRef(traced));
    Py_XSETREF(self->name, Py_NewRef(name));
    self->vectorcall = tcall_vectorcall;
    return 0;
}

static int
tcall_traverse(TracedCall *self, visitproc visit, void *arg)
{
    Py_VISIT(self->capture);
    Py_VISIT(self->prepare);
    Py_VISIT(self->traced);
    Py_VISIT(self->name);
    return 0;
}

static int
tcall_clear(TracedCall *self)
{
    Py_CLEAR(self->capture);
    Py_CLEAR(self->prepare);
    Py_CLEAR(self->traced);
    Py_CLEAR(self->name);
    return 0;
}

static void
tcall_dealloc(TracedCall *self)
{
    PyObject_GC_UnTrack(self);
    tcall_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef tcall_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(TracedCall, vectorcall), READONLY, NULL},
    {NULL},
};

static PyTypeObject TracedCallType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "taskscope._speedups.TracedCall",
    .tp_basicsize = sizeof(TracedCall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)tcall_init,
    .tp_traverse = (traverseproc)tcall_traverse,
    .tp_clear = (inquiry)tcall_clear,
    .tp_dealloc = (destructor)tcall_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(TracedCall, vectorcall),
    .tp_members = tcall_members,
};

/* -- method_type: a decorated method bound without wrapt's per-access bound wrapper -------- */

/* wrapt makes a BoundFunctionWrapper (parsing its arguments) at every attribute access of a
 * decorated method. A decorated function defined in a class gets a subclass of its wrapper
 * type whose __get__, for an instance (or a class, through a classmethod chaining descriptors),
 * returns an ordinary bound method of a second wrapper of the same function kept in the
 * proxy's _self_method: that one's TaskCall (method=True) takes its first argument as the
 * instance. For no instance, and when _self_method is unset, wrapt's own __get__ answers. */
static PyObject *
wrapt_descr_get(PyObject *self, PyObject *obj, PyObject *type);

static descrgetfunc
base_descr_get(PyTypeObject *type)
{
    while (type != NULL && type->tp_descr_get == wrapt_descr_get) type = type->tp_base;
    return type == NULL ? NULL : type->tp_descr_get;
}

static PyObject *
wrapt_descr_get(PyObject *self, PyObject *obj, PyObject *type)
{
    if (obj != NULL && obj != Py_None) {
        PyObject *twin = PyObject_GenericGetAttr(self, s_self_method);
        if (twin != NULL) {
            PyObject *bound = PyMethod_New(twin, obj);
            Py_DECREF(twin);
            return bound;
        }
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return NULL;
        PyErr_Clear();
    }
    descrgetfunc base = base_descr_get(Py_TYPE(self));
    if (base == NULL) return Py_NewRef(self);
    return base(self, obj, type);
}

/* MethodTwin(function, call, unbound): what a decorated method's bound method calls, in place
 * of a wrapt proxy of the function: called as function(self, *args, **kwargs), it hands
 * (function, unbound, args, kwargs) to call (a TaskCall made with method=True) without wrapt's
 * call in between. It reads as the function: __wrapped__ is the function, and __doc__,
 * __module__ and every attribute it does not have itself are the function's. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *function;
    PyObject *call;
    PyObject *unbound;
} MethodTwin;

static PyObject *
twin_vectorcall(PyObject *op_self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    MethodTwin *self = (MethodTwin *)op_self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *positional = PyTuple_New(nargs);
    if (positional == NULL) return NULL;
    for (Py_ssize_t i = 0; i < nargs; i++) PyTuple_SET_ITEM(positional, i, Py_NewRef(args[i]));
    PyObject *keywords = PyDict_New();
    if (keywords == NULL) {
        Py_DECREF(positional);
        return NULL;
    }
    Py_ssize_t count = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < count; i++) {
        if (PyDict_SetItem(keywords, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0) {
            Py_DECREF(positional);
            Py_DECREF(keywords);
            return NULL;
        }
    }
    PyObject *call_args[4] = {self->function, self->unbound, positional, keywords};
    PyObject *result = PyObject_Vectorcall(self->call, call_args, 4, NULL);
    Py_DECREF(positional);
    Py_DECREF(keywords);
    return result;
}

static PyObject *
twin_getattro(PyObject *self, PyObject *name)
{
    PyObject *function = ((MethodTwin *)self)->function;
    if (function == NULL) return PyObject_GenericGetAttr(self, name);  /* never initialised */
    if (PyUnicode_Check(name) &&
        (PyUnicode_Compare(name, s_doc_attr) == 0 || PyUnicode_Compare(name, s_module_attr) == 0))
        return PyObject_GetAttr(function, name);
    PyObject *found = PyObject_GenericGetAttr(self, name);
    if (found != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError)) return found;
    PyErr_Clear();
    return PyObject_GetAttr(function, name);
}

static PyObject *
twin_repr(MethodTwin *self)
{
    if (self->function == NULL) return PyUnicode_FromString("<taskscope method (unset)>");
    return PyUnicode_FromFormat("<taskscope method %R>", self->function);
}

static int
twin_init(MethodTwin *self, PyObject *args, PyObject *kwargs)
{
    PyObject *function, *call, *unbound;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) > 0) {
        PyErr_SetString(PyExc_TypeError, "MethodTwin takes (function, call, unbound)");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "OOO:MethodTwin", &function, &call, &unbound)) return -1;
    if (!PyCallable_Check(function) || !PyCallable_Check(call)) {
        PyErr_SetString(PyExc_TypeError, "MethodTwin takes a callable function and call");
        return -1;
    }
    Py_INCREF(function);
    Py_INCREF(call);
    Py_INCREF(unbound);
    Py_XSETREF(self->function, function);
    Py_XSETREF(self->call, call);
    Py_XSETREF(self->unbound, unbound);
    self->vectorcall = twin_vectorcall;
    return 0;
}

static int
twin_traverse(MethodTwin *self, visitproc visit, void *arg)
{
    Py_VISIT(self->function);
    Py_VISIT(self->call);
    Py_VISIT(self->unbound);
    return 0;
}

static int
twin_clear(MethodTwin *self)
{
    Py_CLEAR(self->function);
    Py_CLEAR(self->call);
    Py_CLEAR(self->unbound);
    return 0;
}

static void
twin_dealloc(MethodTwin *self)
{
    PyObject_GC_UnTrack(self);
    twin_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
twin_call_unset(PyObject *self, PyObject *args, PyObject *kwargs)
{
    PyErr_SetString(PyExc_TypeError, "MethodTwin was not initialised");
    return NULL;
}

static PyObject *
twin_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    if (((MethodTwin *)self)->vectorcall == NULL) return twin_call_unset(self, args, kwargs);
    return PyVectorcall_Call(self, args, kwargs);
}

static PyMemberDef twin_members[] = {
    {"__wrapped__", T_OBJECT, offsetof(MethodTwin, function), READONLY, NULL},
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(MethodTwin, vectorcall), READONLY, NULL},
    {NULL},
};

static PyTypeObject MethodTwinType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "taskscope._speedups.MethodTwin",
    .tp_basicsize = sizeof(MethodTwin),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)twin_init,
    .tp_traverse = (traverseproc)twin_traverse,
    .tp_clear = (inquiry)twin_clear,
    .tp_dealloc = (destructor)twin_dealloc,
    .tp_call = twin_call,
    .tp_getattro = twin_getattro,
    .tp_repr = (reprfunc)twin_repr,
    .tp_vectorcall_offset = offsetof(MethodTwin, vectorcall),
    .tp_members = twin_members,
};

/* method_type(base, name): the subclass of base (a wrapt function wrapper type) described
 * above, named name. */
static PyObject *
method_type(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyType_Check(args[0]) || !PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "method_type takes (base: type, name: str)");
        return NULL;
    }
    Py_ssize_t length;
    const char *given = PyUnicode_AsUTF8AndSize(args[1], &length);
    if (given == NULL) return NULL;
    /* Before 3.12 the type keeps spec.name as its tp_name without a copy: a copy that lives as
     * long as the process (a type or two per import). */
    char *name = PyMem_Malloc((size_t)length + 1);
    if (name == NULL) return PyErr_NoMemory();
    memcpy(name, given, (size_t)length + 1);
    PyType_Slot slots[] = {{Py_tp_descr_get, (void *)wrapt_descr_get}, {0, NULL}};
    PyType_Spec spec = {
        .name = name,
        .basicsize = 0,
        .itemsize = 0,
        .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
        .slots = slots,
    };
    PyObject *bases = PyTuple_Pack(1, args[0]);
    PyObject *made = bases == NULL ? NULL : PyType_FromSpecWithBases(&spec, bases);
    Py_XDECREF(bases);
    if (made == NULL) PyMem_Free(name);
    return made;
}

/* -- ScopeBase: the with/async-with block of a task (taskscope._scope.TaskScope's base) ------ */

/* Ready: an awaitable already done, with its value; what __aenter__/__aexit__ return so an
 * ``async with`` costs no coroutine. */
typedef struct {
    PyObject_HEAD
    PyObject *value;  /* NULL once handed over */
} Ready;

static void
ready_dealloc(Ready *self)
{
    Py_XDECREF(self->value);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
ready_await(PyObject *self)
{
    return Py_NewRef(self);
}

static PyObject *
ready_next(Ready *self)
{
    PyObject *value = self->value;
    if (value == NULL) return NULL;  /* StopIteration with no value */
    self->value = NULL;
    if (value == Py_None) {
        Py_DECREF(value);
        return NULL;
    }
    PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, value);
    Py_DECREF(value);
    if (stop == NULL) return NULL;
    PyErr_SetObject(PyExc_StopIteration, stop);
    Py_DECREF(stop);
    return NULL;
}

/* The await itself: the value handed back in one step, with no StopIteration made. */
static PySendResult
ready_send(PyObject *op_self, PyObject *arg, PyObject **result)
{
    Ready *self = (Ready *)op_self;
    *result = self->value != NULL ? self->value : Py_NewRef(Py_None);
    self->value = NULL;
    return PYGEN_RETURN;
}

static PyAsyncMethods ready_async = {.am_await = ready_await, .am_send = ready_send};

#ifdef Py_TPFLAGS_HAVE_AM_SEND
#define READY_FLAGS (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_AM_SEND)
#else
#define READY_FLAGS Py_TPFLAGS_DEFAULT
#endif

static PyTypeObject ReadyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "taskscope._speedups.Ready",
    .tp_basicsize = sizeof(Ready),
    .tp_flags = READY_FLAGS,
    .tp_dealloc = (destructor)ready_dealloc,
    .tp_as_async = &ready_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)ready_next,
};

/* A new Ready holding value (a new reference taken); NULL passes an error through. */
static PyObject *
ready(PyObject *value)
{
    if (value == NULL) return NULL;
    Ready *made = PyObject_New(Ready, &ReadyType);
    if (made == NULL) {
        Py_DECREF(value);
        return NULL;
    }
    made->value = value;
    return (PyObject *)made;
}

typedef struct {
    PyObject_HEAD
    PyObject *name;
    PyObject *input;
    PyObject *metadata;
    PyObject *kind;
    PyObject *run;
    PyObject *entries;  /* (task, token) for a block on the short road, (frame, tokens) else */
    PyObject *dict;
    PyObject *weakrefs;
} ScopeBase;


/* (name, *, input=None, metadata=None, kind="task", run=None), parsed by hand: with blocks are
 * made at every use, and PyArg_ParseTupleAndKeywords cost more than the rest of __init__. */
/* A block's fields; name checked as TaskScope._check_name does. 0, or -1 with an error set. */
static int
scope_fill(ScopeBase *self, PyObject *name, PyObject *input, PyObject *metadata, PyObject *kind,
           PyObject *run)
{
    if (!PyUnicode_CheckExact(name)) {  /* TaskScope._check_name raises the library's error */
        PyObject *done = PyObject_CallMethodOneArg((PyObject *)self, s_check_name, name);
        if (done == NULL) return -1;
        Py_DECREF(done);
    }
    PyObject *entries = PyList_New(0);
    if (entries == NULL) return -1;
    Py_XSETREF(self->entries, entries);
#define KEEP(field) Py_INCREF(field); Py_XSETREF(self->field, field)
    KEEP(name);
    KEEP(input);
    KEEP(metadata);
    KEEP(kind);
    KEEP(run);
#undef KEEP
    return 0;
}

static int
scope_init(ScopeBase *self, PyObject *args, PyObject *kwargs)
{
    PyObject *name, *input = Py_None, *metadata = Py_None, *kind = s_task_kind_default,
                    *run = Py_None;
    if (PyTuple_GET_SIZE(args) != 1) {
        PyErr_SetString(PyExc_TypeError, "TaskScope() takes the name, then keyword arguments");
        return -1;
    }
    name = PyTuple_GET_ITEM(args, 0);
    if (kwargs != NULL) {
        Py_ssize_t position = 0;
        PyObject *key, *value;
        while (PyDict_Next(kwargs, &position, &key, &value)) {
            PyObject **slot = NULL;
            if (key == s_run) slot = &run;
            else if (key == s_kw_input) slot = &input;
            else if (key == s_kw_metadata) slot = &metadata;
            else if (key == s_kw_kind) slot = &kind;
            else if (PyUnicode_Check(key)) {
                if (PyUnicode_Compare(key, s_run) == 0) slot = &run;
                else if (PyUnicode_Compare(key, s_kw_input) == 0) slot = &input;
                else if (PyUnicode_Compare(key, s_kw_metadata) == 0) slot = &metadata;
                else if (PyUnicode_Compare(key, s_kw_kind) == 0) slot = &kind;
            }
            if (slot == NULL) {
                PyErr_Format(PyExc_TypeError, "TaskScope() got an unexpected keyword argument %R",
                             key);
                return -1;
            }
            *slot = value;
        }
    }
    return scope_fill(self, name, input, metadata, kind, run);
}

/* The task the short road opened for this block: a new reference; NULL (no error set) when
 * the block takes the frame-based road; NULL with an error set on failure. */
static PyObject *
scope_short_task(ScopeBase *self)
{
    PyObject *run = self->run;
    if (run == NULL || run == Py_None || self->input != Py_None || self->name == NULL ||
        !PyUnicode_Check(self->name) || !PyUnicode_Check(self->kind))
        return NULL;
    if (self->metadata != Py_None) {
        int has = PyObject_IsTrue(self->metadata);
        if (has != 0) return NULL;  /* metadata to capture, or an error */
    }
    PyObject *current = NULL, *parent = NULL, *task = NULL;
    if (PyContextVar_Get(run_var, Py_None, &current) < 0) return NULL;
    Py_DECREF(current);  /* only compared */
    if (current != run) return NULL;
    int recording = 1;
    if (Py_TYPE(run) != run_layout.type) {
        PyObject *flag = PyObject_GetAttr(run, s_recording);
        recording = flag == NULL ? -1 : PyObject_IsTrue(flag);
        Py_XDECREF(flag);
    }
    if (recording <= 0) return NULL;
    int known;
    PyObject *live = run_slot(run, RUN_LIVE, &known);
    live = known ? Py_XNewRef(live) : PyObject_GetAttr(run, s_live);
    int is_live = live == NULL ? -1 : PyObject_IsTrue(live);
    Py_XDECREF(live);
    if (is_live != 0) return NULL;
    if (PyContextVar_Get(task_var, Py_None, &parent) < 0) return NULL;
    if (parent != Py_None) {
        PyObject *parent_run = is_task_base(parent) ? Py_XNewRef(((TaskBase *)parent)->run)
                                                    : PyObject_GetAttr(parent, s_run);
        if (parent_run == NULL) {
            Py_DECREF(parent);
            return NULL;
        }
        Py_DECREF(parent_run);  /* only compared */
        if (parent_run != run) Py_SETREF(parent, Py_NewRef(Py_None));
    }
    task = start_managed(run, parent, self->name, Py_None, Py_None, self->kind);
    Py_DECREF(parent);
    return task;
}

static PyObject *
scope_enter(ScopeBase *self, PyObject *unused)
{
    if (self->entries == NULL) {
        PyErr_SetString(PyExc_TypeError, "TaskScope.__init__ was not called");
        return NULL;
    }
    PyObject *task = scope_short_task(self);
    if (task == NULL && PyErr_Occurred()) {
        if (report_internal(s_begin_kind) < 0) return NULL;
    }
    if (task != NULL) {
        PyObject *token = PyContextVar_Set(task_var, task);
        PyObject *entry = token == NULL ? NULL : PyTuple_Pack(2, task, token);
        Py_XDECREF(token);
        if (entry != NULL && PyList_Append(self->entries, entry) == 0) {
            Py_DECREF(entry);
            return task;
        }
        Py_XDECREF(entry);
        Py_DECREF(task);
        return NULL;
    }
    return PyObject_CallMethodNoArgs((PyObject *)self, s_enter_slow);
}

/* Leaves a block: the short road's entry when it is the innermost and its task is current,
 * else TaskScope._exit_slow. Returns None (exceptions are never swallowed). */
static PyObject *
scope_exit(ScopeBase *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "__exit__ takes (exc_type, exc, traceback)");
        return NULL;
    }
    PyObject *exc = args[1];
    Py_ssize_t count = self->entries == NULL ? 0 : PyList_GET_SIZE(self->entries);
    if (count > 0) {
        PyObject *entry = PyList_GET_ITEM(self->entries, count - 1);
        PyObject *task = PyTuple_GET_ITEM(entry, 0);
        PyObject *current = NULL;
        if (PyContextVar_Get(task_var, Py_None, &current) < 0) return NULL;
        Py_DECREF(current);  /* only compared */
        if (task != Py_None && task == current && is_task_base(task)) {
            Py_INCREF(entry);
            if (PyList_SetSlice(self->entries, count - 1, count, NULL) < 0) {
                Py_DECREF(entry);
                return NULL;
            }
            PyObject *token = PyTuple_GET_ITEM(entry, 1);
            PyObject *done = NULL;
            if (PyContextVar_Reset(task_var, token) < 0) {  /* made in another Context */
                PyErr_Clear();
                done = PyObject_CallMethodObjArgs((PyObject *)self, s_reset_elsewhere, token,
                                                  task, NULL);
                if (done == NULL) goto failed;
                Py_DECREF(done);
            }
            if (exc != Py_None) {
                done = PyObject_CallMethodOneArg(task, s_fail_managed, exc);
                if (done == NULL) goto failed;
                Py_DECREF(done);
                Py_DECREF(entry);
                Py_RETURN_NONE;
            }
            TaskBase *handle = (TaskBase *)task;
            int ended = 0;
            if (handle->output == Py_None) {
                ended = end_plain(handle->run, task, Py_None);
                if (ended < 0) {
                    ended = 1;  /* reported here, not retried the slow way */
                    if (report_internal(s_finish_kind) < 0) goto failed;
                }
            }
            if (!ended) {
                done = PyObject_CallMethodOneArg((PyObject *)self, s_end_short, task);
                if (done == NULL) goto failed;
                Py_DECREF(done);
            }
            Py_DECREF(entry);
            Py_RETURN_NONE;
        failed:
            Py_DECREF(entry);
            return NULL;
        }
    }
    PyObject *call_args[4] = {(PyObject *)self, args[0], args[1], args[2]};
    return PyObject_VectorcallMethod(s_exit_slow, call_args, 4, NULL);
}

static PyObject *
scope_aenter(ScopeBase *self, PyObject *unused)
{
    return ready(scope_enter(self, NULL));
}

static PyObject *ready_none;  /* a Ready with no value: answers None every time it is awaited */

static PyObject *
scope_aexit(ScopeBase *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *done = scope_exit(self, args, nargs);
    if (done != Py_None || ready_none == NULL) return ready(done);
    Py_DECREF(done);
    return Py_NewRef(ready_none);  /* no allocation for the common exit */
}

static int
scope_traverse(ScopeBase *self, visitproc visit, void *arg)
{
    Py_VISIT(self->name);
    Py_VISIT(self->input);
    Py_VISIT(self->metadata);
    Py_VISIT(self->kind);
    Py_VISIT(self->run);
    Py_VISIT(self->entries);
    Py_VISIT(self->dict);
    return 0;
}

static int
scope_clear(ScopeBase *self)
{
    Py_CLEAR(self->name);
    Py_CLEAR(self->input);
    Py_CLEAR(self->metadata);
    Py_CLEAR(self->kind);
    Py_CLEAR(self->run);
    Py_CLEAR(self->entries);
    Py_CLEAR(self->dict);
    return 0;
}

static void
scope_dealloc(ScopeBase *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakrefs != NULL) PyObject_ClearWeakRefs((PyObject *)self);
    scope_clear(self);
    type->tp_free((PyObject *)self);  /* a subclass's type is released by subtype_dealloc */
}

static PyMethodDef scope_methods[] = {
    {"__enter__", (PyCFunction)scope_enter, METH_NOARGS, "Open the block's task."},
    {"__exit__", (PyCFunction)(void (*)(void))scope_exit, METH_FASTCALL, "End it."},
    {"__aenter__", (PyCFunction)scope_aenter, METH_NOARGS, "Open the block's task."},
    {"__aexit__", (PyCFunction)(void (*)(void))scope_aexit, METH_FASTCALL, "End it."},
    {NULL},
};

static PyMemberDef scope_members[] = {
    {"name", T_OBJECT, offsetof(ScopeBase, name), 0, NULL},
    {"_input", T_OBJECT, offsetof(ScopeBase, input), 0, NULL},
    {"_metadata", T_OBJECT, offsetof(ScopeBase, metadata), 0, NULL},
    {"_kind", T_OBJECT, offsetof(ScopeBase, kind), 0, NULL},
    {"_run", T_OBJECT, offsetof(ScopeBase, run), 0, NULL},
    {"_entries", T_OBJECT, offsetof(ScopeBase, entries), 0, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(ScopeBase, dict), READONLY, NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(ScopeBase, weakrefs), READONLY, NULL},
    {NULL},
};

static PyTypeObject ScopeBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "taskscope._speedups.ScopeBase",
    .tp_basicsize = sizeof(ScopeBase),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)scope_init,
    .tp_traverse = (traverseproc)scope_traverse,
    .tp_clear = (inquiry)scope_clear,
    .tp_dealloc = (destructor)scope_dealloc,
    .tp_methods = scope_methods,
    .tp_members = scope_members,
    .tp_dictoffset = offsetof(ScopeBase, dict),
    .tp_weaklistoffset = offsetof(ScopeBase, weakrefs),
};

/* run_task(run, name, input=None, *, metadata=None, kind="task"): Run.task, bound to each Run
 * as a method (an instancemethod, see taskscope._run): the run's TaskScope made without a
 * Python frame or a keyword dict. Its Python twin is Run.task's own body. */
static PyTypeObject *scope_type;  /* taskscope._scope.TaskScope, from use_scope_type() */

static PyObject *
run_task_fn(PyObject *module, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (scope_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "taskscope._speedups.use_scope_type() was not called");
        return NULL;
    }
    if (nargs < 1 || nargs > 3) {
        PyErr_Format(PyExc_TypeError, "task() takes from 1 to 2 positional arguments but %zd "
                     "were given", nargs - 1);
        return NULL;
    }
    PyObject *run = args[0];
    PyObject *name = nargs >= 2 ? args[1] : NULL, *input = nargs == 3 ? args[2] : NULL;
    PyObject *metadata = Py_None, *kind = s_task_kind_default;
    Py_ssize_t keywords = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < keywords; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i), **slot = NULL;
        if (PyUnicode_Compare(key, s_name) == 0) slot = &name;
        else if (PyUnicode_Compare(key, s_kw_input) == 0) slot = &input;
        else if (PyUnicode_Compare(key, s_kw_metadata) == 0) slot = &metadata;
        else if (PyUnicode_Compare(key, s_kw_kind) == 0) slot = &kind;
        if (PyErr_Occurred()) return NULL;
        if (slot == NULL) {
            PyErr_Format(PyExc_TypeError, "task() got an unexpected keyword argument %R", key);
            return NULL;
        }
        if ((slot == &name || slot == &input) && *slot != NULL) {
            PyErr_Format(PyExc_TypeError, "task() got multiple values for argument %R", key);
            return NULL;
        }
        *slot = args[nargs + i];
    }
    if (name == NULL) {
        PyErr_SetString(PyExc_TypeError, "task() missing 1 required positional argument: 'name'");
        return NULL;
    }
    if (input == NULL) input = Py_None;
    ScopeBase *scope = (ScopeBase *)scope_type->tp_alloc(scope_type, 0);
    if (scope == NULL) return NULL;
    if (scope_fill(scope, name, input, metadata, kind, run) < 0) {
        Py_DECREF(scope);
        return NULL;
    }
    return (PyObject *)scope;
}

/* use_scope_type(TaskScope): what run_task makes (a subclass of ScopeBase); returns Run.task's
 * C form, an instancemethod of run_task, for the Run class to hold. */
static PyObject *run_task_function;

static PyObject *
use_scope_type(PyObject *module, PyObject *type)
{
    if (!PyType_Check(type) || !PyType_IsSubtype((PyTypeObject *)type, &ScopeBaseType)) {
        PyErr_SetString(PyExc_TypeError, "use_scope_type takes a subclass of ScopeBase");
        return NULL;
    }
    Py_INCREF(type);
    Py_XSETREF(scope_type, (PyTypeObject *)type);
    return PyInstanceMethod_New(run_task_function);
}

/* Makes current again what was current before token's set, keeping any pending exception;
 * a token made in another Context goes through reset (_scope.reset_task). */
static void
restore_task(PyObject *token, PyObject *task, PyObject *reset)
{
    PyObject *type, *error, *traceback;
    PyErr_Fetch(&type, &error, &traceback);
    if (PyContextVar_Reset(task_var, token) < 0) {
        PyErr_Clear();
        PyObject *done = PyObject_CallFunctionObjArgs(reset, token, task, NULL);
        if (done == NULL) PyErr_Clear();  /* the body's own outcome goes on */
        Py_XDECREF(done);
    }
    PyErr_Restore(type, error, traceback);
}

/* Keeps a yielded item (borrowed): a plain one in kept while it has room, others through add.
 * 0, or -1 with an exception set. */
static int
keep_item(PyObject *kept, Py_ssize_t limit, PyObject *add, PyObject *item)
{
    if (kept != Py_None && PyList_GET_SIZE(kept) < limit &&
        (item == Py_None || Py_IS_TYPE(item, &PyLong_Type) || Py_IS_TYPE(item, &PyBool_Type)))
        return PyList_Append(kept, item);
    PyObject *done = PyObject_CallOneArg(add, item);
    if (done == NULL) return -1;
    Py_DECREF(done);
    return 0;
}

/* -- TaskIter: a generator's steps with its task current, for ``yield from`` ---------------- */

/* The generator wrapper (taskscope._generators) delegates to one of these with ``yield from``,
 * so it stays a real generator while each step (make the task current, advance the wrapped
 * generator, restore, keep the item) runs here; its Python twin is _generators._short_road. */
typedef struct {
    PyObject_HEAD
    PyObject *generator;  /* the wrapped generator */
    PyObject *task;
    PyObject *kept;       /* the captured items (a list), or None: every item goes to add */
    Py_ssize_t limit;     /* how many items kept holds at most */
    PyObject *add;        /* Items.add: an item kept is not plain, or kept is full */
    PyObject *reset;      /* _scope.reset_task(token, task): a token made in another Context */
} TaskIter;

enum { STEP_NEXT, STEP_SEND, STEP_THROW, STEP_CLOSE };

static PyObject *
taskiter_step(TaskIter *self, int how, PyObject *value)
{
    if (self->generator == NULL) {
        PyErr_SetString(PyExc_TypeError, "TaskIter was not initialised");
        return NULL;
    }
    PyObject *token = PyContextVar_Set(task_var, self->task);
    if (token == NULL) return NULL;
    PyObject *item, *method;
    switch (how) {
    case STEP_NEXT:
        item = Py_TYPE(self->generator)->tp_iternext(self->generator);
        break;
    case STEP_SEND:
        item = PyObject_CallMethodOneArg(self->generator, s_send, value);
        break;
    case STEP_THROW:
        method = PyObject_GetAttr(self->generator, s_throw);
        item = method == NULL ? NULL : PyObject_Call(method, value, NULL);
        Py_XDECREF(method);
        break;
    default:
        item = PyObject_CallMethodNoArgs(self->generator, s_close);
        break;
    }
    restore_task(token, self->task, self->reset);
    Py_DECREF(token);
    if (item == NULL || how == STEP_CLOSE) return item;
    if (keep_item(self->kept, self->limit, self->add, item) < 0) Py_CLEAR(item);
    return item;
}

static PyObject *
taskiter_next(TaskIter *self)
{
    return taskiter_step(self, STEP_NEXT, NULL);
}

static PyObject *
taskiter_send(TaskIter *self, PyObject *value)
{
    return taskiter_step(self, value == Py_None ? STEP_NEXT : STEP_SEND, value);
}

static PyObject *
taskiter_throw(TaskIter *self, PyObject *args)
{
    return taskiter_step(self, STEP_THROW, args);
}

static PyObject *
taskiter_close(TaskIter *self, PyObject *unused)
{
    PyObject *done = taskiter_step(self, STEP_CLOSE, NULL);
    if (done == NULL) return NULL;
    Py_DECREF(done);
    Py_RETURN_NONE;
}

static int
taskiter_init(TaskIter *self, PyObject *args, PyObject *kwargs)
{
    PyObject *generator, *task, *kept, *add, *reset;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "OOOnOO:TaskIter", &generator, &task, &kept, &limit, &add,
                          &reset))
        return -1;
    if (Py_TYPE(generator)->tp_iternext == NULL || (kept != Py_None && !PyList_Check(kept))) {
        PyErr_SetString(PyExc_TypeError,
                        "TaskIter takes (generator, task, kept: list | None, limit, add, reset)");
        return -1;
    }
#define KEEP(field) Py_INCREF(field); Py_XSETREF(self->field, field)
    KEEP(generator);
    KEEP(task);
    KEEP(kept);
    KEEP(add);
    KEEP(reset);
#undef KEEP
    self->limit = limit;
    return 0;
}

static int
taskiter_traverse(TaskIter *self, visitproc visit, void *arg)
{
    Py_VISIT(self->generator);
    Py_VISIT(self->task);
    Py_VISIT(self->kept);
    Py_VISIT(self->add);
    Py_VISIT(self->reset);
    return 0;
}

static int
taskiter_clear(TaskIter *self)
{
    Py_CLEAR(self->generator);
    Py_CLEAR(self->task);
    Py_CLEAR(self->kept);
    Py_CLEAR(self->add);
    Py_CLEAR(self->reset);
    return 0;
}

static void
taskiter_dealloc(TaskIter *self)
{
    PyObject_GC_UnTrack(self);
    taskiter_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef taskiter_methods[] = {
    {"send", (PyCFunction)taskiter_send, METH_O, "Send a value into the generator."},
    {"throw", (PyCFunction)taskiter_throw, METH_VARARGS, "Raise an exception in it."},
    {"close", (PyCFunction)taskiter_close, METH_NOARGS, "Close it."},
    {NULL},
};

static PyTypeObject TaskIterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "taskscope._speedups.TaskIter",
    .tp_basicsize = sizeof(TaskIter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)taskiter_init,
    .tp_traverse = (traverseproc)taskiter_traverse,
    .tp_clear = (inquiry)taskiter_clear,
    .tp_dealloc = (destructor)taskiter_dealloc,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)taskiter_next,
    .tp_methods = taskiter_methods,
};

/* -- TaskAwait: an async function's task around its coroutine, for ``await`` -------------- */

/* The coroutine wrapper (taskscope._decorator) awaits one of these, so it stays a real
 * coroutine while the task's start, the forwarding of each send/throw and the task's end run
 * here; its Python twin is the short road in _decorator._coroutine_wrapper. While it runs it
 * sits in _scope.pending_coroutines, and has the ``task``, ``run`` and ``owns_run`` that
 * _scope.close_unfinished reads from a frame. */
typedef struct {
    PyObject_HEAD
    PyObject *coroutine;
    PyObject *run;
    PyObject *parent;
    PyObject *captured;
    PyObject *config;   /* (name, kind, raw, finish, pending, close_unfinished, reset_task) */
    PyObject *task;     /* once started */
    PyObject *token;    /* the task's ContextVar token while it runs */
    char owns_run;      /* always 0: a frame's field */
    int state;
} TaskAwait;

static PyTypeObject TaskAwaitType;

enum { AWAIT_NEW, AWAIT_RUNNING, AWAIT_DONE, AWAIT_PASSING };
enum { CFG_NAME, CFG_KIND, CFG_RAW, CFG_FINISH, CFG_PENDING, CFG_CLOSE, CFG_RESET, CFG_SIZE };

#define CFG(self, i) PyTuple_GET_ITEM((self)->config, i)

/* Makes the task current before it current again, keeping any pending exception. */
static void
awaiter_reset(TaskAwait *self)
{
    PyObject *token = self->token;
    if (token == NULL) return;
    self->token = NULL;
    PyObject *type, *error, *traceback;
    PyErr_Fetch(&type, &error, &traceback);
    if (PyContextVar_Reset(task_var, token) < 0) {  /* made in another Context */
        PyErr_Clear();
        PyObject *done = PyObject_CallFunctionObjArgs(CFG(self, CFG_RESET), token, self->task,
                                                      NULL);
        if (done == NULL) PyErr_Clear();
        Py_XDECREF(done);
    }
    Py_DECREF(token);
    PySet_Discard(CFG(self, CFG_PENDING), (PyObject *)self);
    if (PyErr_Occurred()) PyErr_Clear();
    PyErr_Restore(type, error, traceback);
}

static int
awaiter_start(TaskAwait *self)
{
    PyObject *task = start_managed(self->run, self->parent, CFG(self, CFG_NAME), self->captured,
                                   Py_None, CFG(self, CFG_KIND));
    if (task == NULL) {
        if (report_internal(s_task_start_kind) < 0) return -1;
        self->state = AWAIT_PASSING;  /* taskscope failed: the call goes on unrecorded */
        return 0;
    }
    self->task = task;
    self->token = PyContextVar_Set(task_var, task);
    if (self->token == NULL || PySet_Add(CFG(self, CFG_PENDING), (PyObject *)self) < 0) return -1;
    self->state = AWAIT_RUNNING;
    return 0;
}

/* The coroutine returned result (borrowed): the task ends as completed with it. */
static void
awaiter_returned(TaskAwait *self, PyObject *result)
{
    awaiter_reset(self);
    self->state = AWAIT_DONE;
    int ended = 0;
    if (PyObject_IsTrue(CFG(self, CFG_RAW)) == 1) ended = end_plain(self->run, self->task, result);
    if (ended == 0) {
        PyObject *done = PyObject_CallFunctionObjArgs(CFG(self, CFG_FINISH), self->task, result,
                                                      NULL);
        if (done == NULL) ended = -1;
        Py_XDECREF(done);
    }
    if (ended < 0 && report_internal(s_finish_kind) < 0) PyErr_Clear();  /* never the caller's */
}

/* The coroutine raised (the exception is set): the task fails with it, or ends unfinished
 * for a GeneratorExit (closed while pending); the exception goes on. */
static void
awaiter_raised(TaskAwait *self)
{
    awaiter_reset(self);
    self->state = AWAIT_DONE;
    if (!PyErr_ExceptionMatches(PyExc_GeneratorExit)) {
        fail_task(self->task);
        return;
    }
    PyObject *type, *error, *traceback;
    PyErr_Fetch(&type, &error, &traceback);
    PyObject *done = PyObject_CallOneArg(CFG(self, CFG_CLOSE), (PyObject *)self);
    if (done == NULL) PyErr_Clear();
    Py_XDECREF(done);
    PyErr_Restore(type, error, traceback);
}

static PySendResult
awaiter_after(TaskAwait *self, PySendResult status, PyObject *result)
{
    if (status == PYGEN_NEXT) return status;
    if (self->state == AWAIT_RUNNING) {
        if (status == PYGEN_RETURN) awaiter_returned(self, result);
        else awaiter_raised(self);
    }
    self->state = AWAIT_DONE;
    return status;
}

static PySendResult
awaiter_send(PyObject *op_self, PyObject *arg, PyObject **result)
{
    TaskAwait *self = (TaskAwait *)op_self;
    *result = NULL;
    if (self->state == AWAIT_NEW && awaiter_start(self) < 0) return PYGEN_ERROR;
    if (self->state == AWAIT_DONE) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        return PYGEN_ERROR;
    }
    PySendResult status = PyIter_Send(self->coroutine, arg, result);
    return awaiter_after(self, status, *result);
}

/* A method's answer for a send status: the yielded value, or StopIteration(value). */
static PyObject *
awaiter_answer(PySendResult status, PyObject *result)
{
    if (status == PYGEN_NEXT) return result;
    if (status == PYGEN_RETURN) {
        PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, result);
        Py_DECREF(result);
        if (stop != NULL) {
            PyErr_SetObject(PyExc_StopIteration, stop);
            Py_DECREF(stop);
        }
    }
    return NULL;
}

static PyObject *
awaiter_next(PyObject *op_self)
{
    PyObject *result;
    PySendResult status = awaiter_send(op_self, Py_None, &result);
    if (status == PYGEN_RETURN && result == Py_None) {
        Py_DECREF(result);
        return NULL;  /* StopIteration with no value */
    }
    return awaiter_answer(status, result);
}

static PyObject *
awaiter_send_method(PyObject *op_self, PyObject *value)
{
    PyObject *result;
    PySendResult status = awaiter_send(op_self, value, &result);
    return awaiter_answer(status, result);
}

static PyObject *
awaiter_throw(PyObject *op_self, PyObject *args)
{
    TaskAwait *self = (TaskAwait *)op_self;
    if (self->state == AWAIT_DONE) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        return NULL;
    }
    if (self->state == AWAIT_NEW) self->state = AWAIT_PASSING;  /* never started: no task */
    PyObject *method = PyObject_GetAttr(self->coroutine, s_throw);
    PyObject *result = method == NULL ? NULL : PyObject_Call(method, args, NULL);
    Py_XDECREF(method);
    if (result != NULL) return result;  /* the coroutine caught it and awaits again */
    if (!PyErr_ExceptionMatches(PyExc_StopIteration)) {
        awaiter_after(self, PYGEN_ERROR, NULL);
        return NULL;
    }
    PyObject *type, *error, *traceback;
    PyErr_Fetch(&type, &error, &traceback);
    PyErr_NormalizeException(&type, &error, &traceback);
    PyObject *value = error != NULL ? PyObject_GetAttrString(error, "value") : NULL;
    Py_XDECREF(type);
    Py_XDECREF(error);
    Py_XDECREF(traceback);
    if (value == NULL) return NULL;
    awaiter_after(self, PYGEN_RETURN, value);
    return awaiter_answer(PYGEN_RETURN, value);
}

static PyObject *
awaiter_close(PyObject *op_self, PyObject *unused)
{
    TaskAwait *self = (TaskAwait *)op_self;
    if (self->state == AWAIT_DONE) Py_RETURN_NONE;
    int running = self->state == AWAIT_RUNNING;
    PyObject *done = PyObject_CallMethodNoArgs(self->coroutine, s_close);
    if (!running) {
        self->state = AWAIT_DONE;
        return done;
    }
    if (done == NULL) {  /* closing raised something else: the task fails with it */
        awaiter_raised(self);
        return NULL;
    }
    Py_DECREF(done);
    PyErr_SetNone(PyExc_GeneratorExit);  /* closed while pending */
    awaiter_raised(self);
    PyErr_Clear();
    Py_RETURN_NONE;
}

static PyObject *
awaiter_await(PyObject *self)
{
    return Py_NewRef(self);
}

/* await_task(coroutine, run, parent, captured, config): a new TaskAwait. */
static PyObject *
await_task_fn(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyTuple_Check(args[4]) || PyTuple_GET_SIZE(args[4]) != CFG_SIZE ||
        !PyAnySet_Check(PyTuple_GET_ITEM(args[4], CFG_PENDING))) {
        PyErr_SetString(PyExc_TypeError,
                        "await_task takes (coroutine, run, parent, captured, config)");
        return NULL;
    }
    if (task_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "taskscope._speedups.setup() was not called");
        return NULL;
    }
    TaskAwait *self = PyObject_GC_New(TaskAwait, &TaskAwaitType);
    if (self == NULL) return NULL;
    self->coroutine = Py_NewRef(args[0]);
    self->run = Py_NewRef(args[1]);
    self->parent = Py_NewRef(args[2]);
    self->captured = Py_NewRef(args[3]);
    self->config = Py_NewRef(args[4]);
    self->task = NULL;
    self->token = NULL;
    self->owns_run = 0;
    self->state = AWAIT_NEW;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

/* _scope.fast_run's twin: the run a short-road task opened now records into, with its parent
 * (the current task, or None): 1 with new references in *run and *parent; 0 (nothing set)
 * when there is no such run (none, not recording, or live); -1 with an error set. */
static int
short_road_run(PyObject **run_out, PyObject **parent_out)
{
    PyObject *parent = NULL, *run = NULL;
    if (PyContextVar_Get(task_var, Py_None, &parent) < 0) return -1;
    if (parent != Py_None) {
        run = is_task_base(parent) ? Py_XNewRef(((TaskBase *)parent)->run)
                                   : PyObject_GetAttr(parent, s_run);
        if (run == NULL) {
            Py_DECREF(parent);
            if (PyErr_Occurred()) return -1;
            return 0;
        }
    }
    else if (PyContextVar_Get(run_var, Py_None, &run) < 0) {
        Py_DECREF(parent);
        return -1;
    }
    int usable = run != Py_None;
    if (usable && Py_TYPE(run) != run_layout.type) {
        PyObject *flag = PyObject_GetAttr(run, s_recording);
        usable = flag == NULL ? -1 : PyObject_IsTrue(flag);
        Py_XDECREF(flag);
    }
    if (usable > 0) {
        int known;
        PyObject *live = run_slot(run, RUN_LIVE, &known);
        live = known ? Py_XNewRef(live) : PyObject_GetAttr(run, s_live);
        int is_live = live == NULL ? -1 : PyObject_IsTrue(live);
        Py_XDECREF(live);
        usable = is_live < 0 ? -1 : !is_live;
    }
    if (usable <= 0) {
        Py_DECREF(parent);
        Py_DECREF(run);
        return usable;
    }
    *run_out = run;
    *parent_out = parent;
    return 1;
}

/* await_short(coroutine, captured, config): a new TaskAwait under the current task (or run)
 * when the short road can take it (await_task with _scope.fast_run done here), else None. */
static PyObject *
await_short_fn(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "await_short takes (coroutine, captured, config)");
        return NULL;
    }
    PyObject *run, *parent;
    int found = short_road_run(&run, &parent);
    if (found <= 0) return found < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *full[5] = {args[0], run, parent, args[1], args[2]};
    PyObject *made = await_task_fn(module, full, 5);
    Py_DECREF(run);
    Py_DECREF(parent);
    return made;
}

static int
awaiter_traverse(TaskAwait *self, visitproc visit, void *arg)
{
    Py_VISIT(self->coroutine);
    Py_VISIT(self->run);
    Py_VISIT(self->parent);
    Py_VISIT(self->captured);
    Py_VISIT(self->config);
    Py_VISIT(self->task);
    Py_VISIT(self->token);
    return 0;
}

static int
awaiter_clear(TaskAwait *self)
{
    Py_CLEAR(self->coroutine);
    Py_CLEAR(self->run);
    Py_CLEAR(self->parent);
    Py_CLEAR(self->captured);
    Py_CLEAR(self->config);
    Py_CLEAR(self->task);
    Py_CLEAR(self->token);
    return 0;
}

static void
awaiter_dealloc(TaskAwait *self)
{
    PyObject_GC_UnTrack(self);
    awaiter_clear(self);
    PyObject_GC_Del(self);
}

static PyMethodDef awaiter_methods[] = {
    {"send", (PyCFunction)awaiter_send_method, METH_O, "Send a value into the coroutine."},
    {"throw", (PyCFunction)awaiter_throw, METH_VARARGS, "Raise an exception in it."},
    {"close", (PyCFunction)awaiter_close, METH_NOARGS, "Close it."},
    {NULL},
};

static PyMemberDef awaiter_members[] = {
    {"task", T_OBJECT, offsetof(TaskAwait, task), READONLY, NULL},
    {"run", T_OBJECT, offsetof(TaskAwait, run), READONLY, NULL},
    {"owns_run", T_BOOL, offsetof(TaskAwait, owns_run), READONLY, NULL},
    {NULL},
};

static PyAsyncMethods awaiter_async = {.am_await = awaiter_await, .am_send = awaiter_send};

static PyTypeObject TaskAwaitType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "taskscope._speedups.TaskAwait",
    .tp_basicsize = sizeof(TaskAwait),
    .tp_flags = READY_FLAGS | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)awaiter_traverse,
    .tp_clear = (inquiry)awaiter_clear,
    .tp_dealloc = (destructor)awaiter_dealloc,
    .tp_as_async = &awaiter_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)awaiter_next,
    .tp_methods = awaiter_methods,
    .tp_members = awaiter_members,
};

/* -- TaskAsyncIter: an async generator's steps with its task current, for ``await`` -------- */

/* The async generator wrapper (taskscope._generators) awaits one of these for each item, so it
 * stays a real async generator while each step runs here: the wrapped generator's asend (or
 * athrow, aclose) awaitable is driven with the task current around every send into it and
 * restored before each suspension reaches the event loop, and a finished item is kept as
 * TaskIter keeps it. StopAsyncIteration and the body's errors pass through to the wrapper,
 * which ends the task. Its Python twin is the short road of async_generator_wrapper. */
typedef struct {
    PyObject_HEAD
    PyObject *generator;  /* the wrapped async generator */
    PyObject *task;
    PyObject *kept;       /* as TaskIter's */
    Py_ssize_t limit;
    PyObject *add;
    PyObject *reset;
    PyObject *step;       /* the awaitable of the step under way, or NULL between steps */
    PyObject *value;      /* what the next step sends or throws (asend, athrow), or NULL */
    int how;              /* the next step: STEP_NEXT, STEP_SEND, STEP_THROW or STEP_CLOSE */
} TaskAsyncIter;

enum { DRIVE_SEND, DRIVE_THROW, DRIVE_CLOSE };

/* The value of the StopIteration being raised (a new reference), which is cleared; NULL with
 * the exception left set when it is something else. */
static PyObject *
stop_value(void)
{
    if (!PyErr_ExceptionMatches(PyExc_StopIteration)) return NULL;
    PyObject *type, *error, *traceback;
    PyErr_Fetch(&type, &error, &traceback);
    PyErr_NormalizeException(&type, &error, &traceback);
    PyObject *value = error != NULL ? PyObject_GetAttr(error, s_value) : Py_NewRef(Py_None);
    Py_XDECREF(type);
    Py_XDECREF(error);
    Py_XDECREF(traceback);
    return value;
}

/* The wrapped generator's awaitable for the next step, in self->step: 0, or -1. */
static int
aiter_begin(TaskAsyncIter *self)
{
    PyObject *generator = self->generator, *step;
    PyAsyncMethods *async = Py_TYPE(generator)->tp_as_async;
    switch (self->how) {
    case STEP_NEXT:
        step = async != NULL && async->am_anext != NULL
                   ? async->am_anext(generator)
                   : PyObject_CallMethodNoArgs(generator, s_anext);
        break;
    case STEP_SEND:
        step = PyObject_CallMethodOneArg(generator, s_asend, self->value);
        break;
    case STEP_THROW:
        step = PyObject_CallMethodOneArg(generator, s_athrow, self->value);
        break;
    default:
        step = PyObject_CallMethodNoArgs(generator, s_aclose);
        break;
    }
    Py_CLEAR(self->value);
    self->step = step;
    return step == NULL ? -1 : 0;
}

/* One send, throw or close into the step under way, with the task current around it. */
static PySendResult
aiter_drive(TaskAsyncIter *self, int drive, PyObject *arg, PyObject **result)
{
    *result = NULL;
    if (self->generator == NULL) {
        PyErr_SetString(PyExc_TypeError, "TaskAsyncIter was not initialised");
        return PYGEN_ERROR;
    }
    if (self->step == NULL) {
        if (drive == DRIVE_CLOSE) {
            *result = Py_NewRef(Py_None);
            return PYGEN_RETURN;
        }
        if (aiter_begin(self) < 0) return PYGEN_ERROR;
    }
    int closing = self->how == STEP_CLOSE;
    PyObject *token = PyContextVar_Set(task_var, self->task);
    if (token == NULL) return PYGEN_ERROR;
    PySendResult status;
    if (drive == DRIVE_SEND) {
        status = PyIter_Send(self->step, arg, result);
    }
    else {
        PyObject *method = PyObject_GetAttr(self->step, drive == DRIVE_THROW ? s_throw : s_close);
        PyObject *answer = method == NULL ? NULL
                           : drive == DRIVE_THROW ? PyObject_Call(method, arg, NULL)
                                                  : PyObject_CallNoArgs(method);
        Py_XDECREF(method);
        if (drive == DRIVE_CLOSE) {
            status = answer == NULL ? PYGEN_ERROR : PYGEN_RETURN;
            *result = answer;
            closing = 1;
        }
        else if (answer != NULL) {
            status = PYGEN_NEXT;
            *result = answer;
        }
        else {
            *result = stop_value();
            status = *result != NULL ? PYGEN_RETURN : PYGEN_ERROR;
        }
    }
    restore_task(token, self->task, self->reset);
    Py_DECREF(token);
    if (status == PYGEN_NEXT) return status;
    Py_CLEAR(self->step);
    self->how = STEP_NEXT;
    if (status == PYGEN_ERROR || closing) return status;
    if (keep_item(self->kept, self->limit, self->add, *result) < 0) {
        Py_CLEAR(*result);
        return PYGEN_ERROR;
    }
    return status;
}

static PySendResult
aiter_send(PyObject *self, PyObject *arg, PyObject **result)
{
    return aiter_drive((TaskAsyncIter *)self, DRIVE_SEND, arg, result);
}

static PyObject *
aiter_next(PyObject *self)
{
    PyObject *result;
    PySendResult status = aiter_drive((TaskAsyncIter *)self, DRIVE_SEND, Py_None, &result);
    return awaiter_answer(status, result);
}

static PyObject *
aiter_send_method(PyObject *self, PyObject *value)
{
    PyObject *result;
    PySendResult status = aiter_drive((TaskAsyncIter *)self, DRIVE_SEND, value, &result);
    return awaiter_answer(status, result);
}

static PyObject *
aiter_throw(PyObject *self, PyObject *args)
{
    PyObject *result;
    PySendResult status = aiter_drive((TaskAsyncIter *)self, DRIVE_THROW, args, &result);
    return awaiter_answer(status, result);
}

static PyObject *
aiter_close(PyObject *self, PyObject *unused)
{
    PyObject *result;
    if (aiter_drive((TaskAsyncIter *)self, DRIVE_CLOSE, NULL, &result) == PYGEN_ERROR)
        return NULL;
    return result;
}

/* The next await of this object sends value into the wrapped generator (its asend). */
static PyObject *
aiter_asend(TaskAsyncIter *self, PyObject *value)
{
    if (self->step != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "TaskAsyncIter: a step is under way");
        return NULL;
    }
    self->how = value == Py_None ? STEP_NEXT : STEP_SEND;
    Py_XSETREF(self->value, value == Py_None ? NULL : Py_NewRef(value));
    return Py_NewRef(self);
}

/* The next await of this object throws exc into the wrapped generator (its athrow). */
static PyObject *
aiter_athrow(TaskAsyncIter *self, PyObject *exc)
{
    if (self->step != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "TaskAsyncIter: a step is under way");
        return NULL;
    }
    self->how = STEP_THROW;
    Py_XSETREF(self->value, Py_NewRef(exc));
    return Py_NewRef(self);
}

/* The next await of this object closes the wrapped generator (its aclose). */
static PyObject *
aiter_aclose(TaskAsyncIter *self, PyObject *unused)
{
    if (self->step != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "TaskAsyncIter: a step is under way");
        return NULL;
    }
    self->how = STEP_CLOSE;
    Py_CLEAR(self->value);
    return Py_NewRef(self);
}

static PyObject *
aiter_await(PyObject *op_self)
{
    TaskAsyncIter *self = (TaskAsyncIter *)op_self;
    if (self->step != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "TaskAsyncIter: a step is under way");
        return NULL;
    }
    return Py_NewRef(op_self);
}

static int
aiter_init(TaskAsyncIter *self, PyObject *args, PyObject *kwargs)
{
    PyObject *generator, *task, *kept, *add, *reset;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "OOOnOO:TaskAsyncIter", &generator, &task, &kept, &limit, &add,
                          &reset))
        return -1;
    if (kept != Py_None && !PyList_Check(kept)) {
        PyErr_SetString(PyExc_TypeError, "TaskAsyncIter takes (generator, task, "
                                         "kept: list | None, limit, add, reset)");
        return -1;
    }
#define KEEP(field) Py_INCREF(field); Py_XSETREF(self->field, field)
    KEEP(generator);
    KEEP(task);
    KEEP(kept);
    KEEP(add);
    KEEP(reset);
#undef KEEP
    self->limit = limit;
    self->how = STEP_NEXT;
    Py_CLEAR(self->step);
    Py_CLEAR(self->value);
    return 0;
}

static int
aiter_traverse(TaskAsyncIter *self, visitproc visit, void *arg)
{
    Py_VISIT(self->generator);
    Py_VISIT(self->task);
    Py_VISIT(self->kept);
    Py_VISIT(self->add);
    Py_VISIT(self->reset);
    Py_VISIT(self->step);
    Py_VISIT(self->value);
    return 0;
}

static int
aiter_clear(TaskAsyncIter *self)
{
    Py_CLEAR(self->generator);
    Py_CLEAR(self->task);
    Py_CLEAR(self->kept);
    Py_CLEAR(self->add);
    Py_CLEAR(self->reset);
    Py_CLEAR(self->step);
    Py_CLEAR(self->value);
    return 0;
}

static void
aiter_dealloc(TaskAsyncIter *self)
{
    PyObject_GC_UnTrack(self);
    aiter_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef aiter_methods[] = {
    {"asend", (PyCFunction)aiter_asend, METH_O, "Send a value in at the next await."},
    {"athrow", (PyCFunction)aiter_athrow, METH_O, "Throw an exception in at the next await."},
    {"aclose", (PyCFunction)aiter_aclose, METH_NOARGS, "Close the generator at the next await."},
    {"send", (PyCFunction)aiter_send_method, METH_O, "Send a value into the step."},
    {"throw", (PyCFunction)aiter_throw, METH_VARARGS, "Raise an exception in the step."},
    {"close", (PyCFunction)aiter_close, METH_NOARGS, "Close the step."},
    {NULL},
};

static PyAsyncMethods aiter_async = {.am_await = aiter_await, .am_send = aiter_send};

static PyTypeObject TaskAsyncIterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "taskscope._speedups.TaskAsyncIter",
    .tp_basicsize = sizeof(TaskAsyncIter),
    .tp_flags = READY_FLAGS | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)aiter_init,
    .tp_traverse = (traverseproc)aiter_traverse,
    .tp_clear = (inquiry)aiter_clear,
    .tp_dealloc = (destructor)aiter_dealloc,
    .tp_as_async = &aiter_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)aiter_next,
    .tp_methods = aiter_methods,
};

/* -- convert: intake ops into records, on the dispatcher's thread -------------------------- */

typedef struct {
    PyObject *prefix;        /* the id prefix of this process */
    PyObject *capture;       /* capturer.value */
    Py_ssize_t str_limit;    /* capturer.fast_str_limit */
    PyObject *error_info;    /* ErrorInfo | PendingError -> ErrorInfo */
    PyObject *run_start;     /* run -> RunRecord */
    PyObject *run_end;       /* op -> RunRecord */
} Converting;

static PyObject *
format_id(PyObject *prefix, PyObject *number)
{
    unsigned long long value = PyLong_AsUnsignedLongLong(number);
    if (value == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    char digits[24];
    int count = 0;
    if (value < (1ULL << 48)) {  /* the usual case: twelve hex digits, zero-padded */
        static const char hex[] = "0123456789abcdef";
        for (int i = 11; i >= 0; i--, value >>= 4) digits[i] = hex[value & 15];
        digits[12] = '\0';
        count = 12;
    } else {
        count = snprintf(digits, sizeof digits, "%012llx", value);
    }
    if (!PyUnicode_IS_ASCII(prefix)) return PyUnicode_FromFormat("%U%s", prefix, digits);
    Py_ssize_t head = PyUnicode_GET_LENGTH(prefix);
    PyObject *ident = PyUnicode_New(head + count, 127);
    if (ident == NULL) return NULL;
    memcpy(PyUnicode_1BYTE_DATA(ident), PyUnicode_1BYTE_DATA(prefix), (size_t)head);
    memcpy(PyUnicode_1BYTE_DATA(ident) + head, digits, (size_t)count);
    return ident;
}

/* The task's id string, formatted from its number and kept the first time: a new reference. */
static PyObject *
task_id_of(TaskBase *task, PyObject *prefix)
{
    if (task->ident != NULL && task->ident != Py_None) return Py_NewRef(task->ident);
    if (task->number == NULL) {
        PyErr_SetString(PyExc_AttributeError, "task has no number");
        return NULL;
    }
    PyObject *ident = format_id(prefix, task->number);
    if (ident != NULL) Py_XSETREF(task->ident, Py_NewRef(ident));
    return ident;
}

static PyObject *
run_id_of(PyObject *run)
{
    int known;
    PyObject *ident = run_slot(run, RUN_ID, &known);
    if (known && ident != NULL && ident != Py_None) return Py_NewRef(ident);
    ident = PyObject_GetAttr(run, s_id);
    if (ident == NULL || ident != Py_None) return ident;
    Py_DECREF(ident);
    return PyObject_GetAttr(run, s_id_attr);
}

/* run._seq (a new reference to the int), then run._seq += 1; NULL on error. */
static PyObject *
take_seq(PyObject *run)
{
    int known;
    PyObject **slot = NULL;
    PyObject *value = run_slot(run, RUN_SEQ, &known);
    if (known && value != NULL && PyLong_CheckExact(value)) {
        slot = (PyObject **)((char *)run + run_layout.offsets[RUN_SEQ]);
        Py_INCREF(value);
    } else {
        value = PyObject_GetAttr(run, s_seq);
        if (value == NULL) return NULL;
    }
    Py_ssize_t seq = PyLong_AsSsize_t(value);
    PyObject *next = seq < 0 ? NULL : PyLong_FromSsize_t(seq + 1);
    if (next == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "run._seq is negative");
        Py_DECREF(value);
        return NULL;
    }
    if (slot != NULL) {
        Py_SETREF(*slot, next);  /* drops the slot's reference; ours (taken above) remains */
        return value;
    }
    int status = PyObject_SetAttr(run, s_seq, next);
    Py_DECREF(next);
    if (status < 0) {
        Py_DECREF(value);
        return NULL;
    }
    return value;
}

static PyObject *
captured_output(Converting *c, PyObject *value)
{
    if (is_plain(value, c->str_limit)) return Py_NewRef(value);
    return PyObject_CallOneArg(c->capture, value);
}

/* A raw end's metadata (built by taskscope, see Task._complete_uncaptured) captured here, as
 * _convert does: always a dict. */
static PyObject *
captured_metadata(Converting *c, PyObject *metadata)
{
    PyObject *captured = PyObject_CallOneArg(c->capture, metadata);
    if (captured == NULL || PyDict_Check(captured)) return captured;
    PyObject *wrapped = Py_BuildValue("{sN}", "metadata", captured);
    return wrapped;
}

static PyObject *
field(PyObject *value)
{
    if (value == NULL) PyErr_SetString(PyExc_AttributeError, "task field not set");
    return Py_XNewRef(value);
}

typedef struct {
    PyObject *status, *output, *error, *end_ns, *metadata;  /* borrowed */
    int raw;  /* output is a scalar not yet captured */
} End;

/* A task end op's parts; 0, or -1 with an exception set. */
static int
end_of_op(PyObject *op, End *end)
{
    if (!PyTuple_Check(op) || PyTuple_GET_SIZE(op) != 7) {
        PyErr_SetString(PyExc_ValueError, "malformed task end op");
        return -1;
    }
    PyObject *code = PyTuple_GET_ITEM(op, 0);
    end->status = PyTuple_GET_ITEM(op, 2);
    end->output = PyTuple_GET_ITEM(op, 3);
    end->error = PyTuple_GET_ITEM(op, 4);
    end->end_ns = PyTuple_GET_ITEM(op, 5);
    end->metadata = PyTuple_GET_ITEM(op, 6);
    end->raw = code == op_codes[TASK_END_RAW] || code == op_codes[TASK_DONE_RAW];
    return 0;
}

/* A TaskRecord of task as of its end (or running, when end is NULL). */
static PyObject *
task_record_of(Converting *c, TaskBase *task, PyObject *run, End *end, PyObject *seq)
{
    PyObject *fields[14] = {NULL};
    PyObject *record = NULL;
    if (!(fields[0] = task_id_of(task, c->prefix))) goto done;
    if (!(fields[1] = run_id_of(run))) goto done;
    PyObject *parent = task->parent;
    if (parent == NULL || parent == Py_None) {
        fields[2] = Py_NewRef(Py_None);
    } else if (is_task_base(parent)) {
        fields[2] = task_id_of((TaskBase *)parent, c->prefix);
    } else {
        fields[2] = PyObject_GetAttr(parent, s_id_attr);
    }
    if (fields[2] == NULL) goto done;
    if (!(fields[3] = field(task->name))) goto done;
    if (!(fields[5] = field(task->start_ns))) goto done;
    fields[6] = Py_NewRef(seq);
    if (!(fields[7] = field(task->input))) goto done;
    fields[11] = Py_NewRef(Py_None);
    if (!(fields[13] = field(task->kind))) goto done;
    if (end == NULL) {
        fields[4] = Py_NewRef(s_running);
        fields[8] = Py_NewRef(Py_None);
        fields[9] = Py_NewRef(Py_None);
        fields[10] = Py_NewRef(Py_None);
        PyObject *meta = task->metadata;
        int truth = meta == NULL ? 0 : PyObject_IsTrue(meta);
        fields[12] = truth > 0 ? PyObject_CallOneArg((PyObject *)&PyDict_Type, meta)
                               : truth == 0 ? PyDict_New() : NULL;
        if (fields[12] == NULL) goto done;
    } else {
        fields[4] = Py_NewRef(end->status);
        fields[8] = end->raw ? captured_output(c, end->output) : Py_NewRef(end->output);
        if (fields[8] == NULL) goto done;
        fields[9] = end->error == Py_None ? Py_NewRef(Py_None)
                                          : PyObject_CallOneArg(c->error_info, end->error);
        if (fields[9] == NULL) goto done;
        fields[10] = Py_NewRef(end->end_ns);
        fields[12] = end->metadata == Py_None ? PyDict_New()
                     : end->raw ? captured_metadata(c, end->metadata)
                                : Py_NewRef(end->metadata);
        if (fields[12] == NULL) goto done;
    }
    record = make_record(&task_layout, fields,
                         PyDict_CheckExact(fields[12]) && PyDict_GET_SIZE(fields[12]) == 0);
done:
    for (int i = 0; i < 14; i++) Py_XDECREF(fields[i]);
    return record;
}

static PyObject *
event_record_of(Converting *c, PyObject *op)
{
    if (PyTuple_GET_SIZE(op) != 8) {
        PyErr_SetString(PyExc_ValueError, "malformed event op");
        return NULL;
    }
    PyObject *run = PyTuple_GET_ITEM(op, 1), *task = PyTuple_GET_ITEM(op, 2);
    PyObject *fields[8] = {NULL};
    PyObject *record = NULL;
    PyObject *seq = take_seq(run);
    if (seq == NULL) return NULL;
    fields[7] = seq;
    if (!(fields[0] = format_id(c->prefix, PyTuple_GET_ITEM(op, 7)))) goto done;
    if (!(fields[1] = run_id_of(run))) goto done;
    if (task == Py_None) {
        fields[2] = Py_NewRef(Py_None);
    } else if (is_task_base(task)) {
        fields[2] = task_id_of((TaskBase *)task, c->prefix);
    } else {
        fields[2] = PyObject_GetAttr(task, s_id_attr);
    }
    if (fields[2] == NULL) goto done;
    for (int i = 3; i < 7; i++) fields[i] = Py_NewRef(PyTuple_GET_ITEM(op, i));
    record = make_record(&event_layout, fields, 1);
done:
    for (int i = 0; i < 8; i++) Py_XDECREF(fields[i]);
    return record;
}

static TaskBase *
op_task(PyObject *op)
{
    PyObject *task = PyTuple_GET_ITEM(op, 1);
    if (!is_task_base(task)) {
        PyErr_SetString(PyExc_TypeError, "a task op without a task handle");
        return NULL;
    }
    return (TaskBase *)task;
}

/* The record of a task whose start op is also its end (see end_completed): numbered as a
 * start followed at once by its end. A new reference, or NULL with an exception set. */
static PyObject *
done_record(Converting *c, TaskBase *task, End *end)
{
    /* Held only by the op being converted, it is freed with it and can reach nothing that
     * leads back to it; held by someone else too, it goes back to the cycle collector. */
    if (Py_REFCNT(task) > 1 && !PyObject_GC_IsTracked((PyObject *)task)) PyObject_GC_Track(task);
    PyObject *seq = take_seq(task->run);
    PyObject *end_seq = seq == NULL ? NULL : take_seq(task->run);
    if (end_seq == NULL) {
        Py_XDECREF(seq);
        return NULL;
    }
    Py_XSETREF(task->seq, seq);
    PyObject *record = task_record_of(c, task, task->run, end, seq);
    if (record != NULL) {
        PyObject **slot = (PyObject **)((char *)record + task_layout.offsets[11]);
        Py_XSETREF(*slot, Py_NewRef(end_seq));  /* record.end_seq */
    }
    Py_DECREF(end_seq);
    return record;
}

/* One op into records (appended to records); 0, or -1 with an exception set. */
static int
convert_one(Converting *c, PyObject *op, PyObject *records)
{
    int bare_start = is_task_base(op);
    PyObject *code = bare_start ? op_codes[TASK_START] : PyTuple_GET_ITEM(op, 0);
    PyObject *record = NULL;
    End end;
    if (bare_start && ((TaskBase *)op)->done) {
        TaskBase *task = (TaskBase *)op;
        if (task->run == NULL || task->end_output == NULL || task->end_ns == NULL) {
            PyErr_SetString(PyExc_ValueError, "a finished task without its end");
            return -1;
        }
        end = (End){s_completed, task->end_output, Py_None, task->end_ns, Py_None,
                    task->done == TASK_DONE_RAW};
        record = done_record(c, task, &end);
        task->done = 0;
        Py_CLEAR(task->end_output);
        Py_CLEAR(task->end_ns);
    } else if (code == op_codes[TASK_START]) {
        TaskBase *task = bare_start ? (TaskBase *)op : op_task(op);
        if (task == NULL) return -1;
        if (task->run == NULL) {  /* a handle made without its fields (TaskBase.__new__) */
            PyErr_SetString(PyExc_ValueError, "a task handle without its run");
            return -1;
        }
        PyObject *run = task->run;
        PyObject *seq = take_seq(run);
        if (seq == NULL) return -1;
        Py_XSETREF(task->seq, seq);
        /* Its end in the same batch: one record, in its final state, at its start's place. */
        if (task->end_op != NULL && end_of_op(task->end_op, &end) < 0) return -1;
        record = task_record_of(c, task, run, task->end_op != NULL ? &end : NULL, seq);
        if (record == NULL) return -1;
        if (task->end_op != NULL) Py_XSETREF(task->early, Py_NewRef(record));
    } else if (code == op_codes[EVENT]) {
        record = event_record_of(c, op);
    } else if (code == op_codes[TASK_END] || code == op_codes[TASK_END_RAW]) {
        TaskBase *task = op_task(op);
        if (task == NULL) return -1;
        if (task->run == NULL) {
            PyErr_SetString(PyExc_ValueError, "a task handle without its run");
            return -1;
        }
        if (end_of_op(op, &end) < 0) return -1;
        /* From here on the user's references (and what they store in it) are all it has. */
        if (!PyObject_GC_IsTracked((PyObject *)task)) PyObject_GC_Track(task);
        PyObject *end_seq_object = take_seq(task->run);
        if (end_seq_object == NULL) return -1;
        int status = 0;
        if (task->early != NULL) {
            PyObject **slot = (PyObject **)((char *)task->early + task_layout.offsets[11]);
            Py_XSETREF(*slot, Py_NewRef(end_seq_object));  /* early.end_seq */
            Py_CLEAR(task->early);
        } else {
            /* A start dropped from a full queue (or in an earlier batch): a record of its own,
             * placed at its start when that was numbered, else at its end. */
            PyObject *start_seq = task->seq != NULL ? task->seq : end_seq_object;
            record = task_record_of(c, task, task->run, &end, start_seq);
            if (record == NULL || PyObject_SetAttr(record, s_end_seq, end_seq_object) < 0)
                status = -1;
        }
        Py_DECREF(end_seq_object);
        if (status < 0) {
            Py_XDECREF(record);
            return -1;
        }
        if (record == NULL) return 0;
    } else if (code == op_codes[RUN_START]) {
        record = PyObject_CallOneArg(c->run_start, PyTuple_GET_ITEM(op, 1));
    } else if (code == op_codes[RUN_END]) {
        record = PyObject_CallOneArg(c->run_end, op);
    } else {
        return 0;
    }
    if (record == NULL) return -1;
    int status = PyList_Append(records, record);
    Py_DECREF(record);
    return status;
}

static int
is_end(PyObject *op)
{
    if (!PyTuple_Check(op)) return 0;
    PyObject *code = PyTuple_GET_ITEM(op, 0);
    return (code == op_codes[TASK_END] || code == op_codes[TASK_END_RAW]) &&
           is_task_base(PyTuple_GET_ITEM(op, 1));
}

/* convert(ops, start, prefix, capture, str_limit, error_info, run_start, run_end)
 *   -> (records, stop): the records of ops[start:stop], stop being the index of the first
 *   control op at or after start, or len(ops). A task whose start and end are both in there
 *   becomes one record (its end op is parked on the task while this runs). */
static PyObject *
convert(PyObject *module, PyObject *const *argv, Py_ssize_t nargs)
{
    if (nargs != 8 || !PyList_Check(argv[0])) {
        PyErr_SetString(PyExc_TypeError, "convert() takes 8 arguments, ops being a list");
        return NULL;
    }
    PyObject *ops = argv[0];
    Py_ssize_t start = PyLong_AsSsize_t(argv[1]);
    Py_ssize_t limit = PyLong_AsSsize_t(argv[4]);
    if ((start == -1 || limit == -1) && PyErr_Occurred()) return NULL;
    if (start < 0) {
        PyErr_SetString(PyExc_ValueError, "convert() takes a start of 0 or more");
        return NULL;
    }
    Converting c = {argv[2], argv[3], limit, argv[5], argv[6], argv[7]};
    Py_ssize_t length = PyList_GET_SIZE(ops), stop = start;
    for (; stop < length; stop++) {
        PyObject *op = PyList_GET_ITEM(ops, stop);
        if (is_task_base(op)) continue;  /* a task's start */
        if (!PyTuple_Check(op) || PyTuple_GET_SIZE(op) < 2) {
            PyErr_SetString(PyExc_TypeError, "every op must be a task or a tuple of 2+ items");
            return NULL;
        }
        if (PyTuple_GET_ITEM(op, 0) == op_codes[CONTROL]) break;
        if (is_end(op)) {
            TaskBase *task = (TaskBase *)PyTuple_GET_ITEM(op, 1);
            Py_XSETREF(task->end_op, Py_NewRef(op));
        }
    }
    PyObject *records = PyList_New(0);
    int failed = records == NULL;
    for (Py_ssize_t i = start; i < stop && !failed; i++) {
        if (convert_one(&c, PyList_GET_ITEM(ops, i), records) < 0) {
            if (report_internal(s_convert_kind) < 0) failed = 1;
        }
    }
    for (Py_ssize_t i = start; i < stop; i++) {  /* nothing parked outlives this call */
        PyObject *op = PyList_GET_ITEM(ops, i);
        if (is_end(op)) {
            TaskBase *task = (TaskBase *)PyTuple_GET_ITEM(op, 1);
            Py_CLEAR(task->end_op);
            Py_CLEAR(task->early);
        }
    }
    if (failed) {
        Py_XDECREF(records);
        return NULL;
    }
    return Py_BuildValue("(Nn)", records, stop);
}

/* -- flat_copy: the capturer's shortcut for small flat dicts ------------------------------- */

/* flat_copy(mapping, judged, max_items, max_bytes, max_str) -> dict | None
 *   A copy of a dict of at most max_items str keys already judged not secret (judged[key] is
 *   False) and JSON-native values (None, bool, int, finite float, str up to max_str that could
 *   not hold a secret by its shape), within max_bytes; None when anything needs the full walk.
 *   Capturer._flat_copy is its twin. */
static PyObject *
flat_copy_impl(PyObject *mapping, PyObject *judged, Py_ssize_t max_items, Py_ssize_t budget,
               Py_ssize_t max_str)
{
    if (!PyDict_CheckExact(mapping) || !PyDict_Check(judged) ||
        PyDict_GET_SIZE(mapping) > max_items)
        Py_RETURN_NONE;
    Py_ssize_t position = 0;
    PyObject *key, *value;
    while (PyDict_Next(mapping, &position, &key, &value)) {
        if (!PyUnicode_CheckExact(key)) Py_RETURN_NONE;
        PyObject *verdict = PyDict_GetItemWithError(judged, key);
        if (verdict != Py_False) {
            if (verdict == NULL && PyErr_Occurred()) return NULL;
            Py_RETURN_NONE;
        }
        PyTypeObject *kind = Py_TYPE(value);
        if (kind == &PyUnicode_Type) {
            if (PyUnicode_GET_LENGTH(value) > max_str || text_could_hold_secret(value))
                Py_RETURN_NONE;
            budget -= PyUnicode_GET_LENGTH(value);
        } else if (kind == &PyFloat_Type) {
            if (!Py_IS_FINITE(PyFloat_AS_DOUBLE(value))) Py_RETURN_NONE;
        } else if (!(value == Py_None || kind == &PyLong_Type || kind == &PyBool_Type)) {
            Py_RETURN_NONE;
        }
        budget -= PyUnicode_GET_LENGTH(key) + 8;
    }
    if (budget <= 0) Py_RETURN_NONE;
    return PyDict_Copy(mapping);
}

/* plain_tree: Capturer._plain_tree's twin. A copy of a JSON tree (exact dicts with str keys the
 * redactor judged not secret, lists, tuples; short strings without a secret's shape, ints,
 * bools, None, finite floats) that no capture limit cuts, counted as the walk counts bytes;
 * None for anything else. No Python code runs while it copies (exact types only). */
typedef struct {
    PyObject *judged;
    Py_ssize_t max_items, max_depth, max_str, left;
    int scan;
} Tree;

/* A leaf's bytes in *cost: 1, or 0 when it is not a plain leaf. */
static int
tree_leaf(Tree *tree, PyObject *node, Py_ssize_t *cost)
{
    PyTypeObject *kind = Py_TYPE(node);
    if (kind == &PyUnicode_Type) {
        Py_ssize_t length = PyUnicode_GET_LENGTH(node);
        if (length > tree->max_str || (tree->scan && text_could_hold_secret(node))) return 0;
        *cost = length + 2;
        return 1;
    }
    if (node == Py_None || kind == &PyLong_Type || kind == &PyBool_Type ||
        (kind == &PyFloat_Type && Py_IS_FINITE(PyFloat_AS_DOUBLE(node)))) {
        *cost = 8;
        return 1;
    }
    return 0;
}

static inline int
is_container(PyObject *node)
{
    PyTypeObject *kind = Py_TYPE(node);
    return kind == &PyDict_Type || kind == &PyList_Type || kind == &PyTuple_Type;
}

/* A new reference; NULL without an exception when the tree is not plain, with one on error. */
static PyObject *
tree_copy(Tree *tree, PyObject *node, Py_ssize_t depth)
{
    int is_dict = PyDict_CheckExact(node);
    Py_ssize_t size = is_dict ? PyDict_GET_SIZE(node) : Py_SIZE(node);
    if (depth >= tree->max_depth || size > tree->max_items) return NULL;
    if (Py_EnterRecursiveCall(" in taskscope's capture")) return NULL;
    PyObject *out = NULL, *copied = NULL;
    Py_ssize_t cost;
    if (is_dict) {
        if ((out = PyDict_New()) == NULL) goto error;
        Py_ssize_t position = 0;
        PyObject *key, *item;
        while (PyDict_Next(node, &position, &key, &item)) {
            if (!PyUnicode_CheckExact(key) || tree->left <= 0) goto not_plain;
            PyObject *verdict = PyDict_GetItemWithError(tree->judged, key);
            if (verdict != Py_False) {
                if (verdict == NULL && PyErr_Occurred()) goto error;
                goto not_plain;
            }
            tree->left -= PyUnicode_GET_LENGTH(key) + 4;
            if (is_container(item)) {
                if ((copied = tree_copy(tree, item, depth + 1)) == NULL) goto failed;
                int status = PyDict_SetItem(out, key, copied);
                Py_CLEAR(copied);
                if (status < 0) goto error;
            } else {
                if (!tree_leaf(tree, item, &cost)) goto not_plain;
                tree->left -= cost;
                if (PyDict_SetItem(out, key, item) < 0) goto error;
            }
        }
    } else {  /* a list or a tuple: a list */
        if (size == 2) {  /* ("X-Api-Key", "..."): the walk redacts a pair by its name */
            PyObject *name = PySequence_Fast_ITEMS(node)[0];
            if (PyUnicode_CheckExact(name) && PyUnicode_GET_LENGTH(name) <= 80) {
                PyObject *verdict = PyDict_GetItemWithError(tree->judged, name);
                if (verdict != Py_False) {
                    if (verdict == NULL && PyErr_Occurred()) goto error;
                    goto not_plain;
                }
            }
        }
        if ((out = PyList_New(0)) == NULL) goto error;
        for (Py_ssize_t index = 0; index < Py_SIZE(node); index++) {
            if (tree->left <= 0) goto not_plain;
            PyObject *item = PySequence_Fast_ITEMS(node)[index];
            if (is_container(item)) {
                if ((copied = tree_copy(tree, item, depth + 1)) == NULL) goto failed;
                int status = PyList_Append(out, copied);
                Py_CLEAR(copied);
                if (status < 0) goto error;
                tree->left -= 2;
            } else {
                if (!tree_leaf(tree, item, &cost)) goto not_plain;
                tree->left -= 2 + cost;
                if (PyList_Append(out, item) < 0) goto error;
            }
        }
    }
    Py_LeaveRecursiveCall();
    return out;
failed:  /* an inner tree was not plain, or failed: as it said */
not_plain:
error:
    Py_XDECREF(out);
    Py_LeaveRecursiveCall();
    return NULL;
}

static PyObject *
plain_tree(PyObject *module, PyObject *const *argv, Py_ssize_t nargs)
{
    if (nargs != 7 || !PyDict_Check(argv[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "plain_tree(value, judged, max_items, max_depth, max_bytes, max_str, scan)");
        return NULL;
    }
    Tree tree = {argv[1], PyLong_AsSsize_t(argv[2]), PyLong_AsSsize_t(argv[3]),
                 PyLong_AsSsize_t(argv[5]), PyLong_AsSsize_t(argv[4]), PyObject_IsTrue(argv[6])};
    if (PyErr_Occurred()) return NULL;
    if (!is_container(argv[0])) Py_RETURN_NONE;
    PyObject *out = tree_copy(&tree, argv[0], 0);
    if (out == NULL) {
        if (PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_RecursionError)) return NULL;
            PyErr_Clear();  /* too deep for C: the walk cuts it */
        }
        Py_RETURN_NONE;
    }
    if (tree.left <= 0) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    return out;
}

static PyObject *
flat_copy(PyObject *module, PyObject *const *argv, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyDict_Check(argv[1])) {
        PyErr_SetString(PyExc_TypeError, "flat_copy(mapping, judged, max_items, max_bytes, max_str)");
        return NULL;
    }
    Py_ssize_t max_items = PyLong_AsSsize_t(argv[2]);
    Py_ssize_t budget = PyLong_AsSsize_t(argv[3]);
    Py_ssize_t max_str = PyLong_AsSsize_t(argv[4]);
    if ((max_items == -1 || budget == -1 || max_str == -1) && PyErr_Occurred()) return NULL;
    return flat_copy_impl(argv[0], argv[1], max_items, budget, max_str);
}

/* The capturer's copy of a small flat dict (Capturer.value's shortcut), or None when it needs
 * the full capture (a walk, a redaction callback): a new reference, NULL on error. */
static PyObject *
captured_flat_dict(PyObject *value)
{
    PyObject *capturer = PyObject_GetAttr(settings, s_capturer);
    if (capturer == NULL) return NULL;
    Py_ssize_t callback_free = current_str_limit(capturer);
    PyObject *limits = callback_free < 0 ? NULL : PyObject_GetAttr(capturer, s_flat_limits);
    Py_DECREF(capturer);
    if (limits == NULL) {
        if (callback_free == -1) Py_RETURN_NONE;  /* a redaction callback sees every value */
        return NULL;
    }
    PyObject *copy = NULL;
    if (PyTuple_Check(limits) && PyTuple_GET_SIZE(limits) == 4) {
        Py_ssize_t max_items = PyLong_AsSsize_t(PyTuple_GET_ITEM(limits, 1));
        Py_ssize_t max_bytes = PyLong_AsSsize_t(PyTuple_GET_ITEM(limits, 2));
        Py_ssize_t max_str = PyLong_AsSsize_t(PyTuple_GET_ITEM(limits, 3));
        if (!PyErr_Occurred())
            copy = flat_copy_impl(value, PyTuple_GET_ITEM(limits, 0), max_items, max_bytes, max_str);
    } else {
        PyErr_SetString(PyExc_TypeError, "Capturer.flat_limits is malformed");
    }
    Py_DECREF(limits);
    return copy;
}

/* track(obj): give an object back to the cycle collector (see new_task); idempotent. */
static PyObject *
track(PyObject *module, PyObject *object)
{
    if (PyObject_IS_GC(object) && !PyObject_GC_IsTracked(object)) PyObject_GC_Track(object);
    Py_RETURN_NONE;
}

/* -- the module -------------------------------------------------------------------------------- */

static PyObject *
setup(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"task_var", "run_var", "settings", "task_type", "task_record",
                               "event_record", "report_error", "next_number", "task_fields",
                               "event_fields", "run_type", NULL};
    PyObject *values[8], *task_fields, *event_fields, *run_type;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOOOOOOO", keywords, &values[0],
                                     &values[1], &values[2], &values[3], &values[4], &values[5],
                                     &values[6], &values[7], &task_fields, &event_fields,
                                     &run_type))
        return NULL;
    PyObject *run_fields = Py_BuildValue("(ssss)", "_seq", "_id", "_put", "_live");
    if (run_fields == NULL) return NULL;
    int learned = learn_layout(&run_layout, run_type, run_fields);
    Py_DECREF(run_fields);
    if (learned < 0) return NULL;
    if (PyTuple_Check(task_fields) && PyTuple_GET_SIZE(task_fields) != 14) {
        PyErr_SetString(PyExc_ValueError, "TaskRecord has 14 fields here");
        return NULL;
    }
    if (PyTuple_Check(event_fields) && PyTuple_GET_SIZE(event_fields) != 8) {
        PyErr_SetString(PyExc_ValueError, "EventRecord has 8 fields here");
        return NULL;
    }
    if (learn_layout(&task_layout, values[4], task_fields) < 0 ||
        learn_layout(&event_layout, values[5], event_fields) < 0)
        return NULL;
    PyObject **slots[8] = {&task_var, &run_var, &settings, &task_type, &task_record,
                           &event_record, &report_error, &next_number};
    task_is_base = PyType_Check(values[3]) &&
                   PyType_IsSubtype((PyTypeObject *)values[3], &TaskBaseType);
    for (int i = 0; i < 8; i++) {
        Py_INCREF(values[i]);
        Py_XSETREF(*slots[i], values[i]);
    }
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"setup", (PyCFunction)(void (*)(void))setup, METH_VARARGS | METH_KEYWORDS,
     "Hand over the objects the fast paths use; called once by taskscope._accel."},
    {"convert", (PyCFunction)(void (*)(void))convert, METH_FASTCALL,
     "Records for the ops up to the next control op."},
    {"track", (PyCFunction)track, METH_O, "Give an object back to the cycle collector."},
    {"await_task", (PyCFunction)(void (*)(void))await_task_fn, METH_FASTCALL,
     "An awaitable that runs a coroutine as a task: await_task(coroutine, run, parent, "
     "captured, config)."},
    {"await_short", (PyCFunction)(void (*)(void))await_short_fn, METH_FASTCALL,
     "await_task under the current task or run, or None when the short road cannot take it: "
     "await_short(coroutine, captured, config)."},
    {"start_task", (PyCFunction)(void (*)(void))start_task_fn, METH_FASTCALL,
     "A task started in run and queued: start_task(run, parent, name, input, metadata, kind, "
     "managed=True)."},
    {"method_type", (PyCFunction)(void (*)(void))method_type, METH_FASTCALL,
     "A subclass of a wrapt function wrapper type whose __get__ binds _self_method."},
    {"use_scope_type", (PyCFunction)use_scope_type, METH_O,
     "Set the TaskScope type run_task makes; returns Run.task's C form (an instancemethod)."},
    {"emit", (PyCFunction)(void (*)(void))emit_fn, METH_FASTCALL,
     "Queue an event as Run.emit does: True, or False when it needs Run.emit's Python road."},
    {"end_task", (PyCFunction)(void (*)(void))end_task_fn, METH_FASTCALL,
     "End a plain running task as completed with a scalar or small flat result: True, or "
     "False when nothing was done."},
    {"flat_copy", (PyCFunction)(void (*)(void))flat_copy, METH_FASTCALL,
     "A copy of a small flat dict that needs no walk, or None."},
    {"plain_tree", (PyCFunction)(void (*)(void))plain_tree, METH_FASTCALL,
     "A copy of a plain JSON tree that no capture limit cuts, or None."},
    {"could_hold_secret", (PyCFunction)could_hold_secret, METH_O,
     "Whether a str could hold a secret by its shape (the test before redaction by shape)."},
    {NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "taskscope._speedups",
    .m_doc = "The hot path in C; taskscope/_accel.py chooses between it and Python.",
    .m_size = -1,
    .m_methods = module_methods,
};

/* The SHA-256 of this file, passed by hatch_build.py: _accel refuses a build whose source has
 * changed since (a stale editable install). Empty when compiled by hand without it. */
#ifndef TASKSCOPE_SOURCE_HASH
#define TASKSCOPE_SOURCE_HASH ""
#endif

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (intern_all() < 0) return NULL;
    init_hint_table();
    if (PyType_Ready(&IntakeType) < 0 || PyType_Ready(&TaskCallType) < 0 ||
        PyType_Ready(&TaskBaseType) < 0 || PyType_Ready(&ReadyType) < 0 ||
        PyType_Ready(&ScopeBaseType) < 0 || PyType_Ready(&TaskIterType) < 0 ||
        PyType_Ready(&TaskAwaitType) < 0 || PyType_Ready(&MethodTwinType) < 0 ||
        PyType_Ready(&TaskAsyncIterType) < 0 || PyType_Ready(&TracedCallType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&speedups_module);
    if (module == NULL) return NULL;
    if (run_task_function == NULL) {
        static PyMethodDef run_task_def = {
            "task", (PyCFunction)(void (*)(void))run_task_fn, METH_FASTCALL | METH_KEYWORDS,
            "task($self, name, input=None, *, metadata=None, kind='task')\n--\n\n"
            "A task for a ``with`` or ``async with`` block, current inside the block."};
        run_task_function = PyCFunction_New(&run_task_def, NULL);
        if (run_task_function == NULL) {
            Py_DECREF(module);
            return NULL;
        }
    }
    if (ready_none == NULL) {
        Ready *made = PyObject_New(Ready, &ReadyType);
        if (made == NULL) {
            Py_DECREF(module);
            return NULL;
        }
        made->value = NULL;
        ready_none = (PyObject *)made;
    }
    if (PyModule_AddObjectRef(module, "Intake", (PyObject *)&IntakeType) < 0 ||
        PyModule_AddObjectRef(module, "TaskCall", (PyObject *)&TaskCallType) < 0 ||
        PyModule_AddObjectRef(module, "TaskBase", (PyObject *)&TaskBaseType) < 0 ||
        PyModule_AddObjectRef(module, "ScopeBase", (PyObject *)&ScopeBaseType) < 0 ||
        PyModule_AddObjectRef(module, "TaskIter", (PyObject *)&TaskIterType) < 0 ||
        PyModule_AddObjectRef(module, "TaskAsyncIter", (PyObject *)&TaskAsyncIterType) < 0 ||
        PyModule_AddObjectRef(module, "TracedCall", (PyObject *)&TracedCallType) < 0 ||
        PyModule_AddObjectRef(module, "MethodTwin", (PyObject *)&MethodTwinType) < 0 ||
        PyModule_AddStringConstant(module, "SOURCE_HASH", TASKSCOPE_SOURCE_HASH) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
