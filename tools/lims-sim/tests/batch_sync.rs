//! The batch synchronizer against a real MongoDB wire server: it copies what is new or
//! newer, page by page, reports it in LIMS's gauges, and leaves a consumer DB that
//! verifies clean.

use chrono::{SubsecRound, Utc};
use leafsync_core::PlantType;
use leafsync_test_support::{mongo_client, unique_name};
use lims_sim::{
    batch_sync::{SyncMetrics, run_once},
    image::Image,
    verify,
};
use mongodb::bson::{Document, doc};

fn image(plant: PlantType, id: i32) -> Image {
    Image {
        plant,
        id,
        camera_id: 1,
        data: vec![0xff, 0xd8, 0xff, 0xe0, u8::try_from(id % 250).unwrap()],
        gps: [48.5, 16.5],
        created_at: Utc::now().trunc_subsecs(3),
        updated_at: None,
        is_active: false,
        is_deleted: false,
        disease: None,
        percentage: None,
    }
}

#[tokio::test]
async fn a_run_copies_new_and_newer_images_page_by_page_and_reports_them() {
    let client = mongo_client().await;
    let producer = client.database(&unique_name("batch_producer"));
    let consumer = client.database(&unique_name("batch_consumer"));
    let mut images = Vec::new();
    for plant in PlantType::ALL {
        for id in 1..=60 {
            let img = image(plant, id);
            producer
                .collection::<Document>(plant.collection())
                .insert_one(img.document())
                .await
                .unwrap();
            images.push(img);
        }
    }
    let metrics = SyncMetrics::default();

    let first = run_once(&producer, &consumer, &metrics).await.unwrap();
    assert_eq!(first.images(), 180, "more than one page of 50 per plant");
    assert_eq!(
        metrics
            .image
            .with_label_values(&["db-synchronizer", "tomato"])
            .get(),
        60
    );
    assert!(
        metrics
            .image_size
            .with_label_values(&["db-synchronizer", "tomato"])
            .get()
            > 60 * 100
    );
    assert!(
        verify::verify(&producer, &consumer)
            .await
            .unwrap()
            .is_clean()
    );

    let second = run_once(&producer, &consumer, &metrics).await.unwrap();
    assert_eq!(second.images(), 0, "nothing changed, nothing copied");
    assert_eq!(
        metrics
            .image
            .with_label_values(&["db-synchronizer", "tomato"])
            .get(),
        0
    );

    for img in images
        .iter_mut()
        .filter(|i| i.id <= 2 && i.plant == PlantType::Pepper)
    {
        img.disease = Some("Leaf mold".to_owned());
        img.touch(Utc::now().trunc_subsecs(3));
        producer
            .collection::<Document>(img.plant.collection())
            .replace_one(doc! { "id": img.id }, img.document())
            .await
            .unwrap();
    }
    let third = run_once(&producer, &consumer, &metrics).await.unwrap();
    assert_eq!(third.images(), 2, "only the two updated images");
    assert_eq!(
        metrics
            .images_total
            .with_label_values(&["db-synchronizer", "pepper"])
            .get(),
        62
    );
    assert!(
        verify::verify(&producer, &consumer)
            .await
            .unwrap()
            .is_clean()
    );
}
