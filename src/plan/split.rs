//! A large plan cut into runs of whole chats, each planned on a thread of its own; put
//! together in chat order they are the plan of the whole.

use super::*;

/// A plan of fewer targets (desired and recorded) than this is planned on one thread: a
/// thread costs more than it would save.
const TARGETS_PER_THREAD: usize = 100_000;

/// Plans every chat into `ctx`, on as many threads as `ctx.options.threads` asks (by size when
/// 0), telling `tally` what each chat adds, in chat order.
pub(super) fn plan_every<'a>(
    ctx: &mut Ctx<'_, 'a>,
    desired: &'a BTreeMap<Target, Arc<ButtonList>>,
    applied: &'a dyn Applied,
    tally: &mut dyn FnMut(&str, ChatTally),
) {
    let bounds = split_points(desired, applied, ctx.options.threads);
    let ranges: Vec<Span<'_>> = (0..=bounds.len())
        .map(|i| (i.checked_sub(1).map(|j| &bounds[j]), bounds.get(i)))
        .collect();
    // Each piece is a run of whole chats planned on its own; put together in chat
    // order, they are the plan of the whole.
    let pieces = crate::sync::in_order(ranges, "plan", |span: Span<'_>| {
        let mut own = Ctx::new(ctx.options);
        let mut tallies: Vec<(String, ChatTally)> = Vec::new();
        let mut told = |c: &str, t| tallies.push((c.to_owned(), t));
        plan_piece(&mut own, desired, applied, span, &mut told);
        (own, tallies)
    });
    for (done, tallies) in pieces {
        for (chat_id, t) in &tallies {
            tally(chat_id, *t);
        }
        ctx.absorb(done);
    }
}

/// A run of targets: from the first (or the very first, when `None`) up to the second (not
/// included; to the end, when `None`).
type Span<'t> = (Option<&'t Target>, Option<&'t Target>);

/// Plans the chats of `span` into `ctx`.
fn plan_piece<'a>(
    ctx: &mut Ctx<'_, 'a>,
    desired: &'a BTreeMap<Target, Arc<ButtonList>>,
    applied: &'a dyn Applied,
    (from, to): Span<'_>,
    tally: &mut dyn FnMut(&str, ChatTally),
) {
    let options = ctx.options;
    let d = between(desired, from, to).filter(|(t, _)| options.wants(t));
    let a = applied.range(from, to).filter(|(t, _)| options.wants(t));
    ctx.merge(d, a, &mut Vec::new(), tally);
}

/// Where to cut a plan into runs of whole chats, one a thread: the first target of each run
/// but the first (none, for a plan on one thread). Cut by the larger of the two sides, so
/// that the runs hold about as many targets each.
fn split_points(
    desired: &BTreeMap<Target, Arc<ButtonList>>,
    applied: &dyn Applied,
    threads: usize,
) -> Vec<Target> {
    let threads = match threads {
        0 => crate::sync::threads_for(desired.len() + applied.len(), TARGETS_PER_THREAD),
        n => n,
    };
    if threads <= 1 {
        return Vec::new();
    }
    let (len, chats): (usize, Box<dyn Iterator<Item = &Id>>) = if desired.len() >= applied.len() {
        (desired.len(), Box::new(desired.keys().map(|t| &t.chat_id)))
    } else {
        (
            applied.len(),
            Box::new(applied.range(None, None).map(|(t, _)| &t.chat_id)),
        )
    };
    let step = len.div_ceil(threads).max(1);
    let mut cuts: Vec<Target> = Vec::with_capacity(threads - 1);
    let mut previous: Option<&Id> = None;
    for (i, chat_id) in chats.enumerate() {
        if cuts.len() + 1 == threads {
            break;
        }
        // Each cut where the first chat at or after its share starts.
        if i >= (cuts.len() + 1) * step && previous.is_some_and(|p| p != chat_id) {
            cuts.push(Target::everyone(chat_id.clone()));
        }
        previous = Some(chat_id);
    }
    cuts
}
