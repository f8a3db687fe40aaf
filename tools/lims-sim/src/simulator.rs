//! The LIMS jobs, simulated: each change is written to the producer DB and published as
//! the Image API would publish it (the full image as JSON, keyed by id, on its plant's
//! topic).
//!
//! Rates are LIMS's: camera every 30 s (round-robin plants), disease recognizer every
//! 100 s, users job activate/deactivate and metadata update every 300 s each, soft delete
//! every 700 s; all divided by `speedup`. Fault knobs: duplicate events, out-of-order
//! delivery (two updates of one image sent newest first) and poison messages.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use leafsync_core::PlantType;
use mongodb::{Database, bson::doc};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use rdkafka::{
    ClientConfig,
    producer::{FutureProducer, FutureRecord},
};
use tokio_util::sync::CancellationToken;

use crate::{image::Image, jpeg::leaf_jpeg};

/// What to simulate, and where.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Topic per plant, in `PlantType::ALL` order.
    pub topics: [String; 3],
    /// Divides every job interval (100 = a camera image every 0.3 s).
    pub speedup: f64,
    /// Stop after this many camera images (None: until the duration or shutdown).
    pub max_images: Option<u64>,
    /// Stop after this long (None: until max_images or shutdown).
    pub duration: Option<Duration>,
    /// Probability that an event is sent twice.
    pub duplicate_rate: f64,
    /// Probability that an update is delivered out of order (a newer update of the same
    /// image is sent first, then the older one).
    pub reorder_rate: f64,
    /// Probability that a poison record follows an event on the same topic.
    pub poison_rate: f64,
    /// Seed for reproducible runs.
    pub seed: u64,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Images created by the camera job.
    pub created: u64,
    /// Updates (disease, activate/deactivate, metadata).
    pub updated: u64,
    /// Soft deletes.
    pub deleted: u64,
    /// Records published (duplicates and poison included).
    pub published: u64,
    /// Events sent twice.
    pub duplicates: u64,
    /// Older updates sent after newer ones.
    pub reordered: u64,
    /// Poison records.
    pub poison: u64,
}

#[derive(Debug, Clone, Copy)]
enum Job {
    Camera,
    Disease,
    Activation,
    Metadata,
    Delete,
}

impl Job {
    /// LIMS's interval for the job, in seconds.
    fn period(self) -> f64 {
        match self {
            Job::Camera => 30.0,
            Job::Disease => 100.0,
            Job::Activation | Job::Metadata => 300.0,
            Job::Delete => 700.0,
        }
    }
}

const DISEASES: [&str; 5] = [
    "Healthy",
    "Early blight",
    "Late blight",
    "Bacterial spot",
    "Leaf mold",
];
const POISON: [&[u8]; 3] = [
    b"{not json",
    br#"{"id": "seven"}"#,
    br#"{"id": 1, "data": "zz"}"#,
];

struct Sim<'a> {
    config: &'a SimConfig,
    db: &'a Database,
    producer: FutureProducer,
    rng: StdRng,
    images: Vec<Image>,
    next_id: [i32; 3],
    next_plant: usize,
    stats: Stats,
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

impl Sim<'_> {
    async fn publish(&mut self, plant: PlantType, key: &str, value: &[u8]) -> anyhow::Result<()> {
        let topic = &self.config.topics[plant_index(plant)];
        self.producer
            .send(
                FutureRecord::to(topic).key(key).payload(value),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("publishing to {topic}: {e}"))?;
        self.stats.published += 1;
        Ok(())
    }

    /// Publishes an image's current state, with the duplicate and poison knobs.
    async fn send(&mut self, image: &Image) -> anyhow::Result<()> {
        let payload = image.event().to_string();
        let key = image.id.to_string();
        self.publish(image.plant, &key, payload.as_bytes()).await?;
        if self.rng.random_bool(self.config.duplicate_rate) {
            self.publish(image.plant, &key, payload.as_bytes()).await?;
            self.stats.duplicates += 1;
        }
        if self.rng.random_bool(self.config.poison_rate) {
            let poison = POISON[usize::try_from(self.stats.poison % 3).unwrap_or(0)];
            self.publish(image.plant, "poison", poison).await?;
            self.stats.poison += 1;
        }
        Ok(())
    }

    async fn store(&self, image: &Image) -> anyhow::Result<()> {
        self.db
            .collection::<mongodb::bson::Document>(image.plant.collection())
            .replace_one(doc! { "id": image.id }, image.document())
            .upsert(true)
            .await?;
        Ok(())
    }

    async fn camera(&mut self) -> anyhow::Result<()> {
        let plant = PlantType::ALL[self.next_plant % 3];
        self.next_plant += 1;
        let i = plant_index(plant);
        self.next_id[i] += 1;
        let image = Image {
            plant,
            id: self.next_id[i],
            camera_id: self.rng.random_range(1..=4),
            data: leaf_jpeg(&mut self.rng),
            gps: [
                self.rng.random_range(48.0..49.0),
                self.rng.random_range(16.0..17.0),
            ],
            created_at: now(),
            updated_at: None,
            is_active: false,
            is_deleted: false,
            disease: None,
            percentage: None,
        };
        self.store(&image).await?;
        self.send(&image).await?;
        self.images.push(image);
        self.stats.created += 1;
        Ok(())
    }

    /// Applies `change` to a random live image, stores and publishes it; with the reorder
    /// knob, a second update follows at once and is published before the first.
    async fn update(&mut self, change: impl Fn(&mut Image, &mut StdRng)) -> anyhow::Result<()> {
        let live: Vec<usize> = (0..self.images.len())
            .filter(|&i| !self.images[i].is_deleted)
            .collect();
        let Some(&index) = live.choose(&mut self.rng) else {
            return Ok(());
        };
        let mut image = self.images[index].clone();
        change(&mut image, &mut self.rng);
        image.touch(now());
        let first = image.clone();
        if self.rng.random_bool(self.config.reorder_rate) {
            change(&mut image, &mut self.rng);
            image.touch(now());
            self.store(&image).await?;
            self.send(&image).await?;
            self.send(&first).await?;
            self.stats.reordered += 1;
            self.stats.updated += 1;
        } else {
            self.store(&image).await?;
            self.send(&image).await?;
        }
        self.stats.updated += 1;
        self.images[index] = image;
        Ok(())
    }

    async fn run_job(&mut self, job: Job) -> anyhow::Result<()> {
        match job {
            Job::Camera => self.camera().await,
            Job::Disease => {
                self.update(|img, rng| {
                    img.disease = DISEASES.choose(rng).map(|d| (*d).to_owned());
                    img.percentage = Some(rng.random_range(0.5..1.0));
                })
                .await
            }
            Job::Activation => self.update(|img, _| img.is_active = !img.is_active).await,
            Job::Metadata => {
                self.update(|img, rng| {
                    img.camera_id = rng.random_range(1..=4);
                    img.gps = [rng.random_range(48.0..49.0), rng.random_range(16.0..17.0)];
                })
                .await
            }
            Job::Delete => {
                let before = self.stats.updated;
                self.update(|img, _| img.is_deleted = true).await?;
                if self.stats.updated > before {
                    self.stats.updated -= 1;
                    self.stats.deleted += 1;
                }
                Ok(())
            }
        }
    }
}

fn plant_index(plant: PlantType) -> usize {
    PlantType::ALL.iter().position(|p| *p == plant).unwrap_or(0)
}

/// Runs the jobs until `max_images`, `duration` or `shutdown`, whichever comes first.
pub async fn run(
    config: &SimConfig,
    db: &Database,
    shutdown: CancellationToken,
) -> anyhow::Result<Stats> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("message.timeout.ms", "30000")
        .create()?;
    // Ids continue the producer DB's sequence, as LIMS's camera job does across restarts.
    let mut next_id = [0; 3];
    for (i, plant) in PlantType::ALL.iter().enumerate() {
        let last = db
            .collection::<mongodb::bson::Document>(plant.collection())
            .find_one(doc! {})
            .sort(doc! { "id": -1 })
            .await?;
        next_id[i] = last.and_then(|d| d.get_i32("id").ok()).unwrap_or(0);
    }
    let mut sim = Sim {
        config,
        db,
        producer,
        rng: StdRng::seed_from_u64(config.seed),
        images: Vec::new(),
        next_id,
        next_plant: 0,
        stats: Stats::default(),
    };
    let jobs = [
        Job::Camera,
        Job::Disease,
        Job::Activation,
        Job::Metadata,
        Job::Delete,
    ];
    let start = tokio::time::Instant::now();
    let mut due: Vec<tokio::time::Instant> = jobs.iter().map(|_| start).collect();
    let deadline = config.duration.map(|d| start + d);
    let mut report =
        tokio::time::interval_at(start + Duration::from_secs(5), Duration::from_secs(5));
    loop {
        let (next, at) = due
            .iter()
            .enumerate()
            .min_by_key(|(_, at)| **at)
            .map(|(i, at)| (i, *at))
            .expect("five jobs");
        if deadline.is_some_and(|d| at > d) {
            break;
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = report.tick() => {
                let s = &sim.stats;
                tracing::info!(created = s.created, updated = s.updated, deleted = s.deleted, published = s.published, "simulating");
                continue;
            }
            () = tokio::time::sleep_until(at) => {}
        }
        sim.run_job(jobs[next]).await?;
        due[next] = at + Duration::from_secs_f64(jobs[next].period() / config.speedup);
        if config.max_images.is_some_and(|m| sim.stats.created >= m) {
            break;
        }
    }
    Ok(sim.stats)
}
