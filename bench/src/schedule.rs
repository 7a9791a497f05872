//! Which request goes next: the series are cut into *slices* of at most `--batch` samples per
//! scrape, and a request carries one slice for one or more consecutive scrape *rounds*.
//!
//! States of a slice: idle at round `r` (rounds before `r` answered) → in flight (rounds
//! `r..r+k` sent, [`Scheduler::take`]) → idle at round `r + k` ([`Scheduler::complete`]),
//! until `r = points`. A slice is never in flight twice, so a series' sample `i + 1` is sent
//! only after its sample `i` was answered (invariant B2).
//!
//! Order between slices:
//! - [`Order::Rounds`] (default): one scrape round of all series at a time; round `r + 1`
//!   starts once every slice has been answered for round `r`. All concurrency is on one round,
//!   and the pipeline drains at the end of each round.
//! - [`Order::Pipelined`]: a slice moves to its next round as soon as its previous request
//!   was answered, and the idle slice with the oldest round goes first. Same per-series order,
//!   no drain between rounds (how Prometheus' remote-write shards behave when behind).
//!
//! When there are fewer series than `--batch`, a request carries several rounds of the one
//! slice (`--batch / series` samples per series, in time order) so that requests stay near
//! `--batch` samples.

use std::ops::Range;

/// See the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Rounds,
    Pipelined,
}

impl Order {
    pub fn parse(s: &str) -> Option<Order> {
        match s {
            "rounds" => Some(Order::Rounds),
            "pipelined" => Some(Order::Pipelined),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Order::Rounds => "rounds",
            Order::Pipelined => "pipelined",
        }
    }
}

/// How the series are cut into slices and rounds grouped into requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The series of each slice, balanced (sizes differ by at most one).
    pub slices: Vec<Range<usize>>,
    /// Scrape rounds per request (more than one only when all series fit one slice).
    pub rounds_per_request: usize,
    pub points: usize,
}

impl Plan {
    /// `series > 0`, `batch > 0`, `points > 0`.
    pub fn new(series: usize, batch: usize, points: usize) -> Self {
        assert!(series > 0 && batch > 0 && points > 0);
        let count = series.div_ceil(batch);
        let slices = (0..count)
            .map(|k| (k * series / count)..((k + 1) * series / count))
            .collect();
        let rounds_per_request = if count == 1 {
            (batch / series).clamp(1, points)
        } else {
            1
        };
        Plan {
            slices,
            rounds_per_request,
            points,
        }
    }

    /// Requests in the whole run.
    pub fn requests(&self) -> usize {
        self.slices.len() * self.points.div_ceil(self.rounds_per_request)
    }
}

/// One request to send: slice `slice`, rounds `rounds`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Work {
    pub slice: usize,
    pub rounds: Range<usize>,
}

/// What [`Scheduler::take`] answers.
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    Send(Work),
    /// Nothing can go until a request in flight is answered.
    Wait,
    /// Every round of every slice was answered.
    Done,
}

/// The state of every slice (see the module doc). Pure: no IO, no clock.
#[derive(Debug)]
pub struct Scheduler {
    order: Order,
    plan: Plan,
    /// Per slice: the first round not yet answered.
    next_round: Vec<usize>,
    in_flight: Vec<bool>,
}

impl Scheduler {
    pub fn new(plan: Plan, order: Order) -> Self {
        let n = plan.slices.len();
        Scheduler {
            order,
            plan,
            next_round: vec![0; n],
            in_flight: vec![false; n],
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The next request to send, if any may go now.
    pub fn take(&mut self) -> Take {
        let points = self.plan.points;
        let oldest = self.next_round.iter().copied().min().unwrap_or(points);
        if oldest == points {
            return Take::Done;
        }
        let ready = (0..self.next_round.len())
            .filter(|&s| !self.in_flight[s] && self.next_round[s] < points)
            .filter(|&s| self.order == Order::Pipelined || self.next_round[s] == oldest)
            .min_by_key(|&s| self.next_round[s]);
        match ready {
            None => Take::Wait,
            Some(slice) => {
                self.in_flight[slice] = true;
                let first = self.next_round[slice];
                let end = (first + self.plan.rounds_per_request).min(points);
                Take::Send(Work {
                    slice,
                    rounds: first..end,
                })
            }
        }
    }

    /// `work` (from [`Scheduler::take`]) was answered: acknowledged, refused or given up on.
    pub fn complete(&mut self, work: &Work) {
        assert!(
            self.in_flight[work.slice] && self.next_round[work.slice] == work.rounds.start,
            "B2: completing {work:?}, which is not the slice's request in flight"
        );
        self.in_flight[work.slice] = false;
        self.next_round[work.slice] = work.rounds.end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_balance_slices_and_fill_small_requests_with_rounds() {
        let p = Plan::new(10_000, 2_000, 30);
        assert_eq!(p.slices.len(), 5);
        assert!(p.slices.iter().all(|r| r.len() == 2_000));
        assert_eq!((p.rounds_per_request, p.requests()), (1, 150));

        let p = Plan::new(2_500, 2_000, 3);
        assert_eq!(p.slices, vec![0..1_250, 1_250..2_500]);

        let p = Plan::new(300, 2_000, 10);
        assert_eq!(p.slices, vec![0..300]);
        assert_eq!((p.rounds_per_request, p.requests()), (6, 2));

        let p = Plan::new(1, 2_000, 10);
        assert_eq!((p.rounds_per_request, p.requests()), (10, 1));
    }

    /// Runs a scheduler with `c` requests in flight at most, answering the oldest request
    /// first; checks per-slice order and, in `Rounds` order, that no request of round `r + 1`
    /// goes while one of round `r` is unanswered. Returns the requests in send order.
    fn drive(plan: Plan, order: Order, c: usize) -> Vec<Work> {
        let mut s = Scheduler::new(plan.clone(), order);
        let mut in_flight: Vec<Work> = Vec::new();
        let mut sent = Vec::new();
        let mut answered: Vec<usize> = vec![0; plan.slices.len()];
        loop {
            while in_flight.len() < c {
                match s.take() {
                    Take::Send(w) => {
                        assert_eq!(w.rounds.start, answered[w.slice], "B2");
                        if order == Order::Rounds {
                            assert!(answered.iter().all(|&a| a >= w.rounds.start));
                        }
                        sent.push(w.clone());
                        in_flight.push(w);
                    }
                    Take::Wait => break,
                    Take::Done => {
                        assert!(in_flight.is_empty());
                        return sent;
                    }
                }
            }
            let w = in_flight.remove(0);
            answered[w.slice] = w.rounds.end;
            s.complete(&w);
        }
    }

    #[test]
    fn every_round_of_every_slice_is_sent_once_in_order() {
        for order in [Order::Rounds, Order::Pipelined] {
            for (series, batch, points, c) in [(10, 3, 5, 2), (10_000, 2_000, 7, 8), (5, 100, 9, 3)]
            {
                let plan = Plan::new(series, batch, points);
                let sent = drive(plan.clone(), order, c);
                assert_eq!(sent.len(), plan.requests(), "{order:?}");
                for slice in 0..plan.slices.len() {
                    let rounds: Vec<usize> = sent
                        .iter()
                        .filter(|w| w.slice == slice)
                        .flat_map(|w| w.rounds.clone())
                        .collect();
                    assert_eq!(rounds, (0..points).collect::<Vec<_>>(), "{order:?}");
                }
            }
        }
    }

    #[test]
    fn rounds_order_waits_for_the_round_and_pipelined_does_not() {
        // Two slices; answer slice 0's request only: slice 0 may go on only when pipelined.
        for (order, expect) in [
            (Order::Rounds, Take::Wait),
            (
                Order::Pipelined,
                Take::Send(Work {
                    slice: 0,
                    rounds: 1..2,
                }),
            ),
        ] {
            let mut s = Scheduler::new(Plan::new(4, 2, 3), order);
            let a = match s.take() {
                Take::Send(w) => w,
                other => panic!("{other:?}"),
            };
            assert!(matches!(s.take(), Take::Send(Work { slice: 1, .. })));
            assert_eq!(
                s.take(),
                Take::Wait,
                "each slice has one request in flight at most"
            );
            s.complete(&a);
            assert_eq!(s.take(), expect, "{order:?}");
        }
    }
}
